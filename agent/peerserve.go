package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/agent/internal/dbauth"
	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// servePeers accepts peer links from other agents on ln until ctx ends,
// then closes ln and the links and waits for their streams. The TLS handshake already
// refused anything but an agent certificate of the cluster (peerTLS).
// tcp is the TCP listener on the same port number bindPeerPorts opened
// (nil: servePeers tries to open one).
func (a *Agent) servePeers(ctx context.Context, ln *quic.Listener, tcp *net.TCPListener) {
	defer ln.Close()
	// Direct streams over TCP, on the same port number (peertcp.go).
	tctx, tcancel := context.WithCancel(ctx)
	defer a.listenPeersTCP(tctx, ln.Addr(), tcp)()
	defer tcancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	var conns atomic.Int64
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		a.log.Debug("direct connection from another agent", "remote", conn.RemoteAddr().String())
		if conns.Add(1) > maxPeerConns {
			conns.Add(-1)
			conn.CloseWithError(transport.CodeShutdown, "too many peer connections")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.Add(-1)
			defer panics.Recover(a.log, "peer connection from "+conn.RemoteAddr().String(), func() error {
				return conn.CloseWithError(transport.CodeProtocol, "internal error in the agent")
			})
			a.servePeer(ctx, conn)
		}()
	}
}

// servePeer serves the direct streams of one peer link until it ends (at
// the latest when the latest certificate the caller proved expires:
// callerProofs).
func (a *Agent) servePeer(ctx context.Context, conn *quic.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(transport.CodeShutdown, "agent shutting down") })
	defer stop()
	chain := conn.ConnectionState().TLS.PeerCertificates
	if len(chain) == 0 || len(chain[0].URIs) != 1 {
		conn.CloseWithError(transport.CodeUnauthorized, "no agent certificate")
		return
	}
	leaf := chain[0]
	caller, err := identity.ParseURI(leaf.URIs[0])
	if err != nil {
		conn.CloseWithError(transport.CodeUnauthorized, "no agent identity")
		return
	}
	defer a.peers.linkedFrom(caller.String())()
	// The link ends when the latest certificate the caller proved to this
	// agent expires (this one, or a later one after a renewal).
	defer a.peers.proofs.hold(caller.String(), leaf.NotAfter, func() {
		conn.CloseWithError(transport.CodeUnauthorized, "certificate expired: renew it")
	})()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer panics.Recover(a.log, "direct stream from agent "+caller.Name, func() error {
				st.CancelRead(transport.StreamCanceled)
				st.CancelWrite(transport.StreamCanceled)
				return nil
			})
			a.servePeerStream(ctx, st, caller, leaf)
		}()
	}
}

// callerProofs is this agent's one record, per caller agent, of the
// latest certificate the caller proved to it in a handshake (a QUIC peer
// link, servePeer, or a direct TCP+TLS connection, servePeerTCP; each
// verified by peerTLS against the cluster CA at that moment), and of the
// connections it serves for that caller. Every one of them ends when that
// latest certificate expires, not the one it began with: a caller that
// renewed its certificate and shook hands with the new one (peerPool.reprove
// does so after every renewal) keeps its older links and their streams (a
// connection pool, a replication link, a psql session left open) as long
// as it holds a valid certificate. Revocation is not this record's
// business: a lock or an access change cuts each direct stream at once
// through the gateway (the lease, wire.MsgCut), as before.
type callerProofs struct {
	mu      sync.Mutex // guards the fields below
	callers map[string]*callerProof
	next    uint64
}

// callerProof is one caller's latest proven expiry and its connections.
type callerProof struct {
	notAfter time.Time
	timer    *time.Timer
	ends     map[uint64]func() // each ends one connection
}

// hold records that caller (its identity URI) proved a certificate valid
// until notAfter on a connection that end cuts; the connection is cut when
// the latest certificate the caller proved expires. release forgets it
// (call it when the connection ends).
func (p *callerProofs) hold(caller string, notAfter time.Time, end func()) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.callers == nil {
		p.callers = map[string]*callerProof{}
	}
	cp := p.callers[caller]
	switch {
	case cp == nil:
		cp = &callerProof{notAfter: notAfter, ends: map[uint64]func(){}}
		p.callers[caller] = cp
		cp.timer = time.AfterFunc(time.Until(notAfter), func() { p.expire(cp) })
	case notAfter.After(cp.notAfter):
		cp.notAfter = notAfter
		cp.timer.Reset(time.Until(notAfter))
	}
	p.next++
	id := p.next
	cp.ends[id] = end
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(cp.ends, id)
		if len(cp.ends) == 0 && p.callers[caller] == cp {
			cp.timer.Stop()
			delete(p.callers, caller)
		}
	}
}

// expire cuts a caller's connections once its latest proven certificate
// has expired (the timer fires; a proof that came meanwhile moves it).
func (p *callerProofs) expire(cp *callerProof) {
	p.mu.Lock()
	if d := time.Until(cp.notAfter); d > 0 {
		cp.timer.Reset(d)
		p.mu.Unlock()
		return
	}
	ends := make([]func(), 0, len(cp.ends))
	for _, end := range cp.ends {
		ends = append(ends, end)
	}
	p.mu.Unlock()
	for _, end := range ends {
		end()
	}
}

// until returns when the connections of caller end (zero if none is
// held).
func (p *callerProofs) until(caller string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cp := p.callers[caller]; cp != nil {
		return cp.notAfter
	}
	return time.Time{}
}

// servePeerStream serves one direct stream if a gateway announced it for
// this caller, certificate and service.
func (a *Agent) servePeerStream(ctx context.Context, st *quic.Stream, caller identity.ID, leaf *x509.Certificate) {
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	h, err := wire.ReadHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil || h.Kind != wire.KindPeer || h.Ticket == "" {
		refuse(st, wire.StatusBadRequest, "expected a peer header with a ticket")
		return
	}
	// The caller may have sent the header before the gateway decided: it
	// resets the stream if the gateway refuses or relays, which ends the
	// wait for the announcement.
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(st.Context(), cancel)
	x, err := a.expect.take(wctx, h.Ticket)
	stop()
	cancel()
	if errors.Is(err, errCallerLeft) {
		// The gateway refused or relayed a stream sent ahead of its
		// decision (or this agent is stopping).
		a.log.Debug("direct stream dropped before its announcement", "caller", caller.Name, "service", h.Target)
		return
	}
	if err != nil {
		a.log.Info("direct stream refused", "caller", caller.Name, "service", h.Target, "reason", err)
		refuse(st, wire.StatusDenied, err.Error())
		return
	}
	if x.caller != caller.String() || x.serial != certs.X509SerialHex(leaf) || x.service != h.Target {
		a.log.Warn("direct stream refused: the gateway announced it for another caller, certificate or service",
			"caller", caller.Name, "service", h.Target)
		refuse(st, wire.StatusDenied, "this stream was authorised for another caller or service")
		return
	}
	a.serveService(ctx, st, h.Target, caller.String(), h.Ticket, x, dbauth.Credential{User: x.dbUser, Password: x.dbPassword})
}

// punch sends one small non-QUIC datagram to each of a caller's candidate
// addresses, so that a stateful firewall or NAT in front of this agent
// lets the caller's handshake in.
func (a *Agent) punch(addrs []string) {
	tr := a.tr.Load()
	if tr == nil {
		return
	}
	for i, s := range addrs {
		if i == wire.MaxAddrs {
			break
		}
		ua, err := net.ResolveUDPAddr("udp", s)
		if err != nil || ua.IP == nil {
			continue
		}
		if _, err := tr.WriteTo([]byte{0}, ua); err != nil {
			a.log.Debug("punch", "addr", s, "err", fmt.Sprint(err))
		}
	}
}

// adoptDirect tells every gateway connection but the one that announced
// it about a direct stream now served (wire.MsgAdopt), so that each
// tracks it and can cut it; the returned func tells them it ended.
func (a *Agent) adoptDirect(ticket string, x expectation) func() {
	m := wire.Control{Type: wire.MsgAdopt, Ticket: ticket, Caller: x.caller, Serial: x.serial, Service: x.service}
	for _, l := range a.gatewayLinks() {
		if s := l.sess.Load(); s != nil && s != x.from && s.conn.Context().Err() == nil {
			_ = s.send(m)
		}
	}
	return func() {
		// To every gateway connected now (one that never heard of the
		// ticket ignores it).
		for _, l := range a.gatewayLinks() {
			if s := l.sess.Load(); s != nil && s.conn.Context().Err() == nil {
				_ = s.send(wire.Control{Type: wire.MsgEnded, Ticket: ticket})
			}
		}
	}
}

// reportTicket answers a gateway's wire.MsgReport on s: the direct stream
// of ticket, if it is served, is reported to s (MsgAdopt), which tracks it
// from then on; its caller's lease there ended without a word.
func (a *Agent) reportTicket(s *session, ticket string) {
	x, live := a.expect.report(ticket)
	if !live {
		return
	}
	if err := s.send(wire.Control{Type: wire.MsgAdopt, Ticket: ticket, Caller: x.caller, Serial: x.serial, Service: x.service}); err != nil {
		a.log.Debug("report a direct stream to the gateway", "err", err)
	}
}

// reportDirect tells a new gateway connection about every direct stream
// served now: a gateway that restarted, or joined, tracks them too.
func (a *Agent) reportDirect(s *session) {
	for ticket, x := range a.expect.liveStreams() {
		if err := s.send(wire.Control{Type: wire.MsgAdopt, Ticket: ticket, Caller: x.caller, Serial: x.serial, Service: x.service}); err != nil {
			return
		}
	}
}
