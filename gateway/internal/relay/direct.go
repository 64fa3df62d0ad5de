package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// The direct path (see agent/peers.go for the agents' side): for a dial
// of an agent that offers it, to an agent that takes it, the relay
// decides and audits as for any stream, then, instead of relaying, tells
// the target to expect the stream (wire.MsgExpect, with a random ticket)
// and answers the caller wire.StatusDirect and wire.MsgDirect. The dial
// stream stays open while the direct stream lives; it is tracked like a
// relayed stream, and cutting it resets the dial stream and sends the
// target wire.MsgCut, so that both agents reset the stream.

// candidates returns an agent's candidate addresses: the one the gateway
// sees first, then those the agent gave, without repeats, unspecified,
// multicast or malformed ones, at most wire.MaxAddrs.
func candidates(observed net.Addr, given []string) []string {
	var out []string
	seen := map[netip.AddrPort]bool{}
	add := func(ap netip.AddrPort) {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		a := ap.Addr()
		if !ap.IsValid() || ap.Port() == 0 || a.IsUnspecified() || a.IsMulticast() || seen[ap] || len(out) == wire.MaxAddrs {
			return
		}
		seen[ap] = true
		out = append(out, ap.String())
	}
	if ua, ok := observed.(*net.UDPAddr); ok {
		add(ua.AddrPort())
	}
	for _, s := range given {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			add(ap)
		}
	}
	return out
}

// directFor returns the target's connection if the stream from p may take
// the direct path: both agents take it, and the caller offered it (or
// asked for it ahead).
func (s *Server) directFor(p peer.Peer, h wire.Header, target *agentConn) (caller *agentConn, ok bool) {
	if s.NoDirect || h.Direct != wire.DirectOffer && h.Direct != wire.DirectAhead || p.ID.Kind != identity.Agent || target == nil || !target.direct {
		return nil, false
	}
	caller = s.lookup(p.ID.Name)
	if caller == nil || !caller.direct || len(target.addrs) == 0 {
		return nil, false
	}
	return caller, true
}

// aheadRefusal says why the stream of h cannot be decided ahead of its
// use ("" if it can): only a direct stream to a service that needs no
// database credential (a credential is leased per stream, when it starts).
// Nothing is decided or audited for a refusal: the caller asks again, for
// the stream it then has.
func (s *Server) aheadRefusal(p peer.Peer, h wire.Header, node, service string) string {
	switch {
	case service == api.SSHService:
		return "an SSH stream cannot be decided ahead"
	case s.credentialPath(node, service) != "":
		return fmt.Sprintf("service %s on %s logs in to its database for the caller: its streams are decided when they start", service, node)
	}
	if _, ok := s.directFor(p, h, s.lookup(node)); !ok {
		return fmt.Sprintf("the direct path to %s is not available: its streams are decided when they start", node)
	}
	return ""
}

// awaitUse waits on the lease st of a stream decided ahead until its
// caller starts it (wire.AheadUsed) or gives it up (ends the lease, or
// sends anything else), for at most AheadHold. It reports whether the
// stream started. A grant not used is audited (stream.unused) and void:
// the lease is reset and the target told to forget the announcement, so
// that the ticket serves no stream this gateway does not track. While
// unused, the grant is also void once the target's connection to this
// gateway ends (the target most likely restarted and forgot the ticket).
func (s *Server) awaitUse(p peer.Peer, st *quic.Stream, target *agentConn, node, service, ticket string) bool {
	stop := context.AfterFunc(target.conn.Context(), func() {
		st.CancelWrite(transport.StreamCanceled)
		st.CancelRead(transport.StreamCanceled)
	})
	hold := s.AheadHold
	if hold <= 0 {
		hold = wire.AheadHold
	}
	_ = st.SetReadDeadline(time.Now().Add(hold))
	var b [1]byte
	_, err := io.ReadFull(st, b[:])
	_ = st.SetReadDeadline(time.Time{})
	targetUp := stop()
	if targetUp && err == nil && b[0] == wire.AheadUsed {
		return true
	}
	s.log().Debug("direct stream decided ahead ended unused", "caller", p.String(), "node", node, "service", service)
	if targetUp {
		s.forgetTicket(target, ticket)
	}
	s.auditNow(audit.Event{Type: audit.StreamUnused, Actor: p.String(), Subject: node + "/" + service, Outcome: audit.Success,
		Details: map[string]string{"path": "direct", "ahead": "true"}})
	st.CancelWrite(transport.StreamCanceled)
	st.CancelRead(transport.StreamCanceled)
	return false
}

// forgetTicket tells the target of a direct stream that its caller ended
// the stream's lease (wire.MsgCut): it forgets the announcement, and ends
// the stream if it still runs. A caller closes the lease once the stream
// is over; one that closes it sooner (or goes away) would otherwise keep
// a stream no gateway tracks, which a revocation could not reach.
func (s *Server) forgetTicket(target *agentConn, ticket string) {
	if err := target.sendControl(wire.Control{Type: wire.MsgCut, Ticket: ticket, Code: uint64(transport.StreamCanceled),
		Message: "the caller ended the stream's lease"}); err != nil {
		s.log().Debug("direct path: cannot tell the target a lease ended", "node", target.name, "err", err)
	}
}

// leaseLost tells the target of a direct stream that its caller's lease
// ended without a word from the caller (wire.MsgReport): the target reports
// the stream (wire.MsgAdopt) if it still runs, and this gateway tracks it
// as adopted. A caller cut off from the gateway keeps its stream, and a
// caller that goes silent on purpose does not take it out of reach.
func (s *Server) leaseLost(target *agentConn, ticket string) {
	if err := target.sendControl(wire.Control{Type: wire.MsgReport, Ticket: ticket}); err != nil {
		s.log().Debug("direct path: cannot ask the target to report a stream", "node", target.name, "err", err)
	}
}

// endedByCaller reports whether err, from reading a direct stream's
// lease, says its caller ended it: a FIN, a reset, its connection closed.
// Any other end (its connection silent or broken, or closed by this
// gateway) loses the lease without a word from the caller.
func endedByCaller(err error) bool {
	if err == nil {
		return true
	}
	var (
		se *quic.StreamError
		ae *quic.ApplicationError
	)
	return errors.As(err, &se) && se.Remote || errors.As(err, &ae) && ae.Remote
}

// goDirect hands an authorised stream to the direct path: the target is
// told to expect it, the caller gets the grant, and the stream is tracked
// until the caller closes its dial stream (the direct stream's lease).
// It returns false, having sent nothing to the caller, if the target
// could not be told: the stream is then relayed. The target is told while
// the decision's audit event commits (it serves nothing before the caller
// comes with the ticket); the caller gets the grant only once it has.
//
// A stream decided ahead (wire.DirectAhead) goes the same way, then waits
// for its caller to start it (awaitUse); tracked meanwhile, so that a
// revocation or an access change cuts the grant as it would the stream.
func (s *Server) goDirect(p peer.Peer, st *quic.Stream, node, service, proposed string, ahead bool, target, caller *agentConn, l *liveStream, gate *auditGate, cred *streamCred) bool {
	// The caller's proposed ticket, when it has the form of one: it sent
	// it to the target already, while this gateway decided.
	ticket := proposed
	if !wire.ValidTicket(ticket) {
		ticket = wire.NewTicket()
	}
	x := wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: p.ID.String(), Serial: p.Serial, Service: service, Addrs: caller.addrs}
	cred.expect(&x)
	if err := target.sendControl(x); err != nil {
		s.log().Info("direct path: cannot tell the target; relaying", "node", node, "err", err)
		return false
	}
	_ = st.SetWriteDeadline(time.Now().Add(transport.HeaderTimeout))
	err := wire.WriteReply(st, wire.Reply{Status: wire.StatusDirect})
	if err == nil {
		err = wire.WriteControl(st, wire.Control{Type: wire.MsgDirect, Ticket: ticket, Node: node, Addrs: target.addrs})
	}
	_ = st.SetWriteDeadline(time.Time{})
	// Tracked from the grant on: a revocation from now cuts it.
	l.path = "direct"
	l.held.Store(ahead)
	var aborted atomic.Bool
	l.abort = func(code quic.StreamErrorCode) {
		aborted.Store(true)
		cred.cut()
		reason, _ := wire.CutReason(uint64(code))
		st.CancelWrite(code)
		st.CancelRead(code)
		if err := target.sendControl(wire.Control{Type: wire.MsgCut, Ticket: ticket, Code: uint64(code), Message: reason}); err != nil {
			s.log().Warn("direct path: cannot tell the target to cut a stream", "node", node, "err", err)
		}
	}
	untrack := s.streams.track(l)
	defer untrack()
	// The grant overlapped the audit write; the target passes no byte
	// before it is told the event is durable.
	if aerr := gate.wait(); aerr != nil || err != nil {
		_ = target.sendControl(wire.Control{Type: wire.MsgCut, Ticket: ticket, Code: uint64(transport.StreamCanceled)})
		if aerr != nil {
			s.log().Error("direct stream refused: the audit log cannot be written", "caller", p.String(), "node", node, "err", aerr)
		}
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return true
	}
	if err := target.sendControl(wire.Control{Type: wire.MsgCommitted, Ticket: ticket}); err != nil {
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return true
	}
	s.log().Debug("direct stream granted", "caller", p.String(), "node", node, "service", service, "ahead", ahead)
	if ahead {
		if !s.awaitUse(p, st, target, node, service, ticket) {
			return true
		}
		s.streams.started(l)
	}
	// The caller sends nothing more on the lease; it ends it (FIN) with
	// the direct stream. The target then ends the stream, if the caller
	// did not (forgetTicket); anything sent on the lease ends it too. A
	// lease lost otherwise (the caller's connection silent, broken, or
	// closed by this gateway as it stops) hands the tracking over to the
	// target's report (leaseLost): the stream goes on. A cut (abort)
	// told the target already.
	_, err = io.Copy(io.Discard, io.LimitReader(st, 1<<16))
	switch {
	case aborted.Load():
	case endedByCaller(err):
		s.forgetTicket(target, ticket)
	default:
		s.leaseLost(target, ticket)
	}
	_ = st.Close()
	st.CancelRead(transport.StreamCanceled)
	return true
}

// maxAdopted bounds the direct streams one agent connection reports.
const maxAdopted = DefaultMaxStreamsPerAgent

// adopt tracks a direct stream the agent ac serves as target (wire.MsgAdopt),
// so that revocations and access changes made now cut it, wherever it was
// decided; and cuts it at once if the caller is no longer allowed (a lock,
// a revoked certificate or a policy change made while no gateway tracked
// it: the one that decided it died).
func (s *Server) adopt(ac *agentConn, m wire.Control) {
	u, err := url.Parse(m.Caller)
	if err != nil {
		return
	}
	caller, err := identity.ParseURI(u)
	if err != nil || caller.Kind != identity.Agent || caller.Cluster != s.CA.Cluster() ||
		identity.ValidateName("service", m.Service) != nil || m.Ticket == "" || len(m.Ticket) > 64 {
		return
	}
	cut := func(code quic.StreamErrorCode) {
		reason, _ := wire.CutReason(uint64(code))
		if err := ac.sendControl(wire.Control{Type: wire.MsgCut, Ticket: m.Ticket, Code: uint64(code), Message: reason}); err != nil {
			s.log().Warn("direct path: cannot tell the target to cut a stream", "node", ac.name, "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), transport.HeaderTimeout)
	defer cancel()
	if code, why := s.stillAllowed(ctx, caller, m.Serial, ac.name, m.Service); code != 0 {
		s.log().Info("direct stream cut on report: no longer allowed", "caller", caller.Name, "node", ac.name, "service", m.Service, "reason", why)
		cut(code)
		return
	}
	l := &liveStream{caller: caller, from: caller.Name, to: ac.name, service: m.Service, path: "direct", abort: cut,
		callerSerial: m.Serial, targetSerial: ac.serial}
	ac.adoptMu.Lock()
	defer ac.adoptMu.Unlock()
	if ac.adopted == nil {
		ac.adopted = map[string]func(){}
	}
	if _, dup := ac.adopted[m.Ticket]; dup || len(ac.adopted) >= maxAdopted {
		return
	}
	ac.adopted[m.Ticket] = s.streams.track(l)
}

// stillAllowed checks a direct stream reported by its target against the
// store now: 0 if it may go on, else the code to cut it with and why.
// When the store cannot say, the stream goes on (as relayed ones do while
// the store is away).
func (s *Server) stillAllowed(ctx context.Context, caller identity.ID, serial, node, service string) (quic.StreamErrorCode, string) {
	a, err := s.Store.GetAgent(ctx, caller.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return transport.StreamRevoked, "the calling agent is gone"
	case err != nil:
		return 0, ""
	case a.Locked:
		return transport.StreamRevoked, "the calling agent is locked"
	}
	if serial != "" {
		rec, err := s.Store.GetCertificate(ctx, store.CertX509, serial)
		if errors.Is(err, store.ErrNotFound) || err == nil && (!rec.RevokedAt.IsZero() || rec.Subject != caller.Name) {
			return transport.StreamRevoked, "the calling agent's certificate is revoked or unknown"
		}
	}
	d, err := s.access().DecideStream(ctx, caller, node, service)
	if err == nil && !d.Allowed {
		return transport.StreamAccessChanged, d.Reason
	}
	return 0, ""
}

// untrackAdopted forgets the adopted stream of ticket, or all of them
// when ticket is "" (the connection ended).
func (ac *agentConn) untrackAdopted(ticket string) {
	ac.adoptMu.Lock()
	defer ac.adoptMu.Unlock()
	if ticket != "" {
		if untrack, ok := ac.adopted[ticket]; ok {
			untrack()
			delete(ac.adopted, ticket)
		}
		return
	}
	for t, untrack := range ac.adopted {
		untrack()
		delete(ac.adopted, t)
	}
}
