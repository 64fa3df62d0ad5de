package agent

import (
	"context"
	"crypto/x509"
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
func (a *Agent) servePeers(ctx context.Context, ln *quic.Listener) {
	defer ln.Close()
	// Direct streams over TCP, on the same port number (peertcp.go).
	tctx, tcancel := context.WithCancel(ctx)
	defer a.listenPeersTCP(tctx, ln.Addr())()
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
// the latest when the caller's certificate expires).
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
	expiry := time.AfterFunc(time.Until(leaf.NotAfter), func() {
		conn.CloseWithError(transport.CodeUnauthorized, "certificate expired: renew it")
	})
	defer expiry.Stop()
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
	wctx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	x, err := a.expect.take(wctx, h.Ticket)
	cancel()
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

// reportDirect tells a new gateway connection about every direct stream
// served now: a gateway that restarted, or joined, tracks them too.
func (a *Agent) reportDirect(s *session) {
	for ticket, x := range a.expect.liveStreams() {
		if err := s.send(wire.Control{Type: wire.MsgAdopt, Ticket: ticket, Caller: x.caller, Serial: x.serial, Service: x.service}); err != nil {
			return
		}
	}
}
