// Package relay is the gateway's QUIC side: it accepts connections from
// agents and clients (mutual TLS, verified by package peer), keeps the
// registry of connected agents and their services (registry.go), and relays
// each stream from its caller to the target agent over the target's own
// connection, after package access allowed it and the decision was written
// to the audit log. The streams relayed now are tracked (tracker.go) so that
// revocation and access re-evaluation can cut them; the registry and the
// tracker each have their own lock.
//
// Connection lifecycle (one goroutine per connection, owned by Serve):
//
//	accept ─▶ verify peer ─▶ agent: control stream + hello ─▶ registered
//	                     └─▶ user:  no control stream
//	streams: dial ─▶ access (decision + audit) ─▶ open deliver on target ─▶ splice
//	close:   peer gone, Close, a newer connection of the same agent (once
//	         the old one carries no stream), or certificate expiry: a
//	         user's login certificate; for an agent, the latest
//	         certificate it proved on any connection (certLife)
//
// A refused connection's audit event goes through an auditlog.Folder
// (repeats from one source cost one event per interval). A panic serving
// one connection or stream is recovered at its boundary (pkg/panics): that
// one is closed, the others go on. The bytes of running SSH sessions reach
// the store every BytesEvery (bytes.go), so that sessions ls shows them
// live.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Server relays streams. Fill the exported fields, then call Serve.
type Server struct {
	Store store.Store
	CA    *certs.Authority
	Audit *auditlog.Writer
	// Denials records refused QUIC connections (anonymous callers),
	// folding repeats; nil means one event each.
	Denials *auditlog.Folder
	// Sessions checks the session of every stream to a node's SSH
	// endpoint; nil refuses them all.
	Sessions SessionChecker
	// IdleTimeout closes an SSH session after this long without traffic;
	// zero means the node's default (15 min).
	IdleTimeout time.Duration
	// MaxStreamsPerUser caps the streams one user has relayed at once,
	// over all their connections, so that one person cannot take a node's
	// capacity (a node accepts transport.MaxStreams at once) from
	// everyone; zero means DefaultMaxStreamsPerUser.
	MaxStreamsPerUser int
	// MaxStreamsPerAgent is the same cap for an agent, which carries the
	// connection pools of the applications on its VM; zero means
	// DefaultMaxStreamsPerAgent.
	MaxStreamsPerAgent int
	// MaxStreamsPerSession caps the streams to a node's SSH endpoint that
	// one bastion session carries at once (tunnel ssh uses one; each one
	// the node holds for its SSH handshake); zero means
	// DefaultMaxStreamsPerSession.
	MaxStreamsPerSession int
	// BytesEvery is how often the bytes of running SSH sessions are added
	// to their totals in the store (so that sessions ls shows them live);
	// zero means DefaultBytesEvery.
	BytesEvery time.Duration
	// NoDirect stops the relay from brokering direct streams between
	// agents (direct.go): every stream then goes through it.
	NoDirect bool
	// AheadHold voids a direct stream decided ahead whose caller holds
	// the grant unused longer; zero means wire.AheadHold.
	AheadHold time.Duration
	Clock     func() time.Time
	Log       *slog.Logger

	// DBCreds leases the database credentials of services whose agent
	// logs in to its database for the caller (dbcreds.go); nil refuses
	// streams to them.
	DBCreds DBCreds

	// Access makes every stream decision and holds the policy cache; nil
	// means one of the relay's own, over Store, CA and Audit. Its Live and
	// Sessions, if unset, are filled with this relay and Sessions (if it
	// can end sessions) for re-evaluation. Share one Decider between the
	// relay, the session manager and the login service.
	Access     *access.Decider
	accessOnce sync.Once

	reg     registry // who is connected
	streams tracker  // the streams relayed now
	// trustGen is the generation of the CA keys whose trust bundle
	// PushTrust last sent (trustpush.go): 0, the keys this gateway
	// started with.
	trustGen atomic.Uint64

	wg sync.WaitGroup // every connection and stream goroutine
}

// agentConn is a connected agent.
type agentConn struct {
	name     string
	conn     *quic.Conn
	since    time.Time
	services []wire.Service
	// direct: the agent takes direct streams (its hello said so), at
	// addrs (the address the gateway sees first, then its own).
	direct bool
	addrs  []string
	// trustEpoch is the epoch of the trust bundle the agent says it holds
	// (its hello, then wire.MsgTrusted).
	trustEpoch atomic.Uint64
	// active counts the streams on this connection, so a connection
	// replaced after a certificate renewal is closed only once idle.
	active atomic.Int64
	// life ends the connection when the latest certificate the agent
	// proved on any of its connections expires (nil in tests that build
	// an agentConn by hand); serial is the connection's own certificate's.
	life   *certLife
	serial string

	ctlMu sync.Mutex // serialises writes on ctl
	ctl   *quic.Stream

	// adopted are the direct streams this agent serves as target and
	// reported (direct.go's adopt): ticket → untrack.
	adoptMu sync.Mutex
	adopted map[string]func()
}

// sendControl writes one control message to the agent.
func (ac *agentConn) sendControl(m wire.Control) error {
	ac.ctlMu.Lock()
	defer ac.ctlMu.Unlock()
	_ = ac.ctl.SetWriteDeadline(time.Now().Add(transport.HeaderTimeout))
	defer ac.ctl.SetWriteDeadline(time.Time{})
	return wire.WriteControl(ac.ctl, m)
}

func (s *Server) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock()
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve accepts connections from each listener (QUIC over UDP, and over
// TCP) until ctx ends, then closes every
// connection and waits for all goroutines. A panic while serving one
// connection or stream closes that one and is logged and counted
// (pkg/panics); the others go on.
func (s *Server) Serve(ctx context.Context, lns ...*quic.Listener) error {
	defer s.wg.Wait()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer panics.Recover(s.log(), "session bytes reporter", nil)
		s.reportBytes(ctx)
	}()
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			errc <- s.accept(ctx, ln)
		}()
	}
	var err error
	for range lns {
		if e := <-errc; e != nil && err == nil {
			err = e
		}
	}
	return err
}

// accept serves the connections of ln until ctx ends.
func (s *Server) accept(ctx context.Context, ln *quic.Listener) error {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept QUIC connection: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer panics.Recover(s.log(), "QUIC connection from "+conn.RemoteAddr().String(), closeOnPanic(conn))
			s.handleConn(ctx, conn)
		}()
	}
}

// closeOnPanic closes a connection whose goroutine panicked.
func closeOnPanic(conn *quic.Conn) func() error {
	return func() error {
		return conn.CloseWithError(transport.CodeShutdown, "the gateway hit an internal error on this connection; reconnect")
	}
}

// Wait waits for every connection and stream goroutine to end (after the
// context given to Serve ended).
func (s *Server) Wait() { s.wg.Wait() }

// access returns the decider (Access, or the relay's own). On first use
// it fills what Access lacks for re-evaluation: this relay's live streams
// (Live) and Sessions, if it can end sessions.
func (s *Server) access() *access.Decider {
	s.accessOnce.Do(func() {
		if s.Access == nil {
			s.Access = &access.Decider{Store: s.Store, Audit: s.Audit, Clock: s.Clock, Log: s.Log}
			if s.Denials != nil {
				s.Access.Denials = s.Denials
			}
			if s.CA != nil {
				s.Access.MaxTTL = s.CA.MaxTTL
			}
		}
		if s.Access.Live == nil {
			s.Access.Live = s
		}
		if e, ok := s.Sessions.(access.SessionEnder); ok && s.Access.Sessions == nil {
			s.Access.Sessions = e
		}
	})
	return s.Access
}

// Decider returns the access decider the relay uses (for callers that
// share it: the admin API, the fan-out of changes from other gateways).
func (s *Server) Decider() *access.Decider { return s.access() }

// ReloadPolicy reads the policy rules again and re-evaluates every live
// session and stream (access.Decider.Reevaluate): the admin API calls it
// after every change of policy rules, roles or users' roles.
func (s *Server) ReloadPolicy(ctx context.Context) error {
	return s.Reevaluate(ctx)
}

// Reevaluate is access.Decider.Reevaluate on the relay's decider.
func (s *Server) Reevaluate(ctx context.Context) error {
	return s.access().Reevaluate(ctx)
}

func (s *Server) handleConn(ctx context.Context, conn *quic.Conn) {
	cctx := conn.Context()
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(transport.CodeShutdown, "the gateway is shutting down") })
	defer stop()
	p, err := peer.Verify(cctx, s.Store, s.CA, conn.ConnectionState().TLS.PeerCertificates, s.now(), identity.Agent, identity.User)
	if err != nil {
		var pe *peer.Error
		msg := err.Error()
		if errors.As(err, &pe) && pe.Internal != nil {
			s.log().Error("verify QUIC peer", "remote", conn.RemoteAddr().String(), "err", pe.Internal)
		}
		ev := audit.Event{Type: audit.AgentDenied, Actor: "anonymous", Outcome: audit.Failure,
			Reason: msg, SourceIP: hostOf(conn.RemoteAddr().String())}
		if s.deny(ev) {
			s.log().Debug("QUIC connection refused (a repeat: folded into one audit event per minute)", "remote", conn.RemoteAddr().String(), "reason", msg)
		} else {
			s.log().Info("QUIC connection refused", "remote", conn.RemoteAddr().String(), "reason", msg)
		}
		conn.CloseWithError(transport.CodeUnauthorized, msg)
		return
	}
	// The peer is known: its connection no longer counts against its
	// source's share of unauthenticated connections, nor against the
	// connections being set up (the gateway's admission).
	netguard.Authenticated(conn.Context())
	transport.Admitted(conn.Context())
	// A network rule that comes to refuse this source cuts the connection
	// (tunnel admin network deny), as it does the TCP listeners'.
	defer netguard.CutOnDeny(conn.Context(), func(reason string) {
		conn.CloseWithError(transport.CodeRevoked, reason)
	})()
	// A connection ends no later than its certificate: a user's at its
	// login certificate's expiry; an agent's at the expiry of the latest
	// certificate the agent proved on a connection (registry.addAgent),
	// so that the streams a connection replaced after a renewal still
	// carries outlive the certificate it began with.
	life := newCertLife(p.NotAfter, func() {
		conn.CloseWithError(transport.CodeUnauthorized, "certificate expired: renew it")
	})
	defer life.stop()

	var ac *agentConn
	if p.ID.Kind == identity.Agent {
		ac, err = s.register(cctx, conn, p, life)
		if err != nil {
			s.log().Info("agent connection refused", "agent", p.ID.Name, "err", err)
			conn.CloseWithError(transport.CodeProtocol, err.Error())
			return
		}
		defer s.unregister(ac)
	} else {
		defer s.reg.addUserConn(p.ID.Name, conn)()
	}
	src := hostOf(conn.RemoteAddr().String())
	var wg sync.WaitGroup
	defer wg.Wait()
	// A panic below closes the connection before waiting for its streams
	// (which end with it).
	defer panics.Recover(s.log(), "QUIC connection of "+p.String(), closeOnPanic(conn))
	for {
		st, err := conn.AcceptStream(cctx)
		if err != nil {
			return
		}
		if ac != nil {
			ac.active.Add(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ac != nil {
				defer ac.active.Add(-1)
			}
			defer panics.Recover(s.log(), "QUIC stream of "+p.String(), func() error {
				st.CancelRead(transport.StreamCanceled)
				st.CancelWrite(transport.StreamCanceled)
				return nil
			})
			s.handleStream(cctx, p, src, st)
		}()
	}
}

// register reads the agent's control stream hello and records the agent;
// a newer connection replaces an older one of the same agent.
func (s *Server) register(ctx context.Context, conn *quic.Conn, p peer.Peer, life *certLife) (*agentConn, error) {
	hctx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	defer cancel()
	st, err := conn.AcceptStream(hctx)
	if err != nil {
		return nil, fmt.Errorf("no control stream: %w", err)
	}
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	h, err := wire.ReadHeader(st)
	if err != nil || h.Kind != wire.KindControl {
		return nil, fmt.Errorf("the first stream must be the control stream")
	}
	hello, err := wire.ReadControl(st)
	if err != nil || hello.Type != wire.MsgHello {
		return nil, fmt.Errorf("the control stream must start with hello")
	}
	_ = st.SetReadDeadline(time.Time{})
	_ = st.SetWriteDeadline(time.Now().Add(transport.HeaderTimeout))
	if err := wire.WriteControl(st, wire.Control{Type: wire.MsgWelcome, Message: "welcome " + p.ID.Name, Direct: !s.NoDirect, Ahead: !s.NoDirect}); err != nil {
		return nil, err
	}
	_ = st.SetWriteDeadline(time.Time{})
	ac := &agentConn{name: p.ID.Name, conn: conn, since: s.now(), services: hello.Services, ctl: st, life: life, serial: p.Serial}
	ac.trustEpoch.Store(hello.Epoch)
	if hello.Direct && !s.NoDirect {
		ac.direct, ac.addrs = true, candidates(conn.RemoteAddr(), hello.Addrs)
	}
	// Read before the registry publishes ac: from then on its services
	// change under the registry's lock (setServices).
	names := make([]string, 0, len(ac.services))
	for _, sv := range ac.services {
		names = append(names, sv.Name)
	}
	if old := s.reg.addAgent(ac); old != nil {
		// New streams go to the new connection; the old one closes when its
		// last stream ends (at the latest when the agent's latest
		// certificate expires: addAgent extended it).
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer panics.Recover(s.log(), "retiring agent connection "+old.name, nil)
			s.retire(old)
		}()
	}
	if err := s.Store.TouchAgent(ctx, ac.name, ac.since); err != nil {
		s.log().Warn("record agent connection", "agent", ac.name, "err", err)
	}
	s.auditNow(audit.Event{Type: audit.AgentConnected, Actor: p.String(), Subject: ac.name, Outcome: audit.Success,
		SourceIP: hostOf(conn.RemoteAddr().String()), Details: map[string]string{"services": strings.Join(names, ","), "version": hello.Version}})
	s.log().Info("agent connected", "agent", ac.name, "remote", conn.RemoteAddr().String(), "services", names)
	// The control stream stays open for heartbeats; its goroutine ends
	// with the connection.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer panics.Recover(s.log(), "control stream of agent "+ac.name, closeOnPanic(conn))
		s.trustOnConnect(ac)
		s.control(ac, st)
	}()
	return ac, nil
}

// certLife ends a connection when its certificate expires, or, once
// extended, when a later certificate of the same principal expires: an
// agent that renewed its certificate and connected with the new one keeps
// its older connections, and the streams they still carry, as long as the
// new certificate (registry.addAgent). A revocation, a lock or a network
// rule cuts the connection at once regardless (EndAgent, CutOnDeny).
type certLife struct {
	mu       sync.Mutex // guards the fields below
	notAfter time.Time
	timer    *time.Timer
	stopped  bool
}

// newCertLife calls end once notAfter (or a later time given to extend)
// has passed.
func newCertLife(notAfter time.Time, end func()) *certLife {
	l := &certLife{notAfter: notAfter}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = time.AfterFunc(time.Until(notAfter), func() {
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		if d := time.Until(l.notAfter); d > 0 {
			l.timer.Reset(d) // extended meanwhile
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		end()
	})
	return l
}

// extend moves the end to notAfter if that is later.
func (l *certLife) extend(notAfter time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || !notAfter.After(l.notAfter) {
		return
	}
	l.notAfter = notAfter
	l.timer.Reset(time.Until(notAfter))
}

// set moves the end to notAfter, earlier or later (a proof withdrawn:
// registry.withdrawProofs); a time past ends the connection now.
func (l *certLife) set(notAfter time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.notAfter = notAfter
	l.timer.Reset(time.Until(notAfter))
}

// until returns when the connection ends.
func (l *certLife) until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.notAfter
}

// stop cancels the end (the connection ended otherwise).
func (l *certLife) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	l.timer.Stop()
}

// retire closes a replaced connection once it carries no stream.
func (s *Server) retire(old *agentConn) {
	defer s.reg.retired(old)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for old.active.Load() > 0 {
		select {
		case <-old.conn.Context().Done():
			return
		case <-t.C:
		}
	}
	if s.reg.claimRetired(old) {
		old.conn.CloseWithError(transport.CodeReplaced, "replaced by a newer connection of the same agent")
	}
}

// control answers pings, takes catalogue updates, adoptions and trust
// epochs, and ignores heartbeats, until the stream ends.
func (s *Server) control(ac *agentConn, st *quic.Stream) {
	defer st.CancelRead(transport.StreamCanceled)
	defer ac.untrackAdopted("")
	for {
		m, err := wire.ReadControl(st)
		if err != nil {
			return
		}
		switch m.Type {
		case wire.MsgPing:
			if err := ac.sendControl(wire.Control{Type: wire.MsgPong, Seq: m.Seq}); err != nil {
				return
			}
		case wire.MsgCatalog:
			s.reg.setServices(ac, m.Services)
		case wire.MsgAdopt:
			s.adopt(ac, m)
		case wire.MsgEnded:
			ac.untrackAdopted(m.Ticket)
		case wire.MsgTrusted:
			ac.trustEpoch.Store(m.Epoch)
		case wire.MsgBeat:
			// Nothing to do: its packet is what counts (see wire.MsgBeat).
		}
	}
}

func (s *Server) unregister(ac *agentConn) {
	s.reg.removeAgent(ac)
	if err := s.Store.TouchAgent(context.Background(), ac.name, s.now()); err != nil {
		s.log().Warn("record agent disconnection", "agent", ac.name, "err", err)
	}
	s.log().Info("agent disconnected", "agent", ac.name)
}

func (s *Server) lookup(node string) *agentConn { return s.reg.agent(node) }

// Online reports, for the admin API, which agents are connected, since
// when, and with which services, and how many streams each has open now
// (a grant held unused, liveStream.held, is not a stream yet).
func (s *Server) Online() map[string]api.Agent {
	out := s.reg.online()
	for _, l := range s.streams.where(func(l *liveStream) bool { return l.from != "" && !l.held.Load() }) {
		a, ok := out[l.from]
		if !ok {
			continue
		}
		if l.path == "direct" {
			a.DirectStreams++
		} else {
			a.RelayedStreams++
		}
		out[l.from] = a
	}
	return out
}

// deny records a refusal of an anonymous caller without making it wait,
// through the Folder when there is one; it reports whether the event was
// folded into a later one.
func (s *Server) deny(ev audit.Event) (folded bool) {
	if s.Denials == nil {
		s.auditNow(ev)
		return false
	}
	ev.Time = s.now()
	done, folded := s.Denials.Record(ev)
	if folded {
		return true
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := <-done; err != nil {
			s.log().Error("write audit event", "type", ev.Type, "err", err)
		}
	}()
	return false
}

// auditNow writes an event without making anyone wait for it (connection
// bookkeeping; a failure is logged).
func (s *Server) auditNow(ev audit.Event) {
	ev.Time = s.now()
	done := s.Audit.Append(ev)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := <-done; err != nil {
			s.log().Error("write audit event", "type", ev.Type, "err", err)
		}
	}()
}

func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}
