package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/agent/internal/dbauth"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

type quicStream = quic.Stream

// session is one QUIC connection to a gateway and what runs on it.
type session struct {
	// tcp: QUIC carried over TCP (UDP to the gateway is blocked); closer
	// then ends the TCP connection and its transport once the session
	// ended.
	tcp    bool
	closer func()

	conn  *quic.Conn
	ctl   *quic.Stream  // the control stream
	ctlMu sync.Mutex    // serialises writes on ctl
	done  chan struct{} // closed when every goroutine of the session ended
	// hearing, over UDP, follows whether the gateway still answers (the
	// heartbeat looks); nil over TCP.
	hearing *transport.Hearing
}

// send writes one control message to the gateway.
func (s *session) send(m wire.Control) error {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	_ = s.ctl.SetWriteDeadline(time.Now().Add(transport.HeaderTimeout))
	defer s.ctl.SetWriteDeadline(time.Time{})
	return wire.WriteControl(s.ctl, m)
}

// link is the agent's connection to one gateway. An agent keeps one to
// every gateway it was given, each with its own reconnect loop: any of
// them delivers streams, and streams from the local listeners go out
// through one that is connected (see [Agent.OpenStream]).
type link struct {
	addr    string
	stop    context.CancelFunc      // ends its keep loop (the gateway left DNS)
	sess    atomic.Pointer[session] // the current connection, nil when none
	renewed chan struct{}           // a new certificate is ready: reconnect with it
}

func newLink(addr string) *link { return &link{addr: addr, renewed: make(chan struct{}, 1)} }

// Quiet implements transport.Quiet: the current connection has heard
// nothing from the gateway for a while (it may have died), so new streams
// try the other gateways first.
func (l *link) Quiet() bool {
	s := l.sess.Load()
	return s != nil && s.hearing.Quiet(time.Now())
}

// OpenStream implements transport.StreamOpener on this gateway's current
// connection; it fails at once while there is none.
func (l *link) OpenStream(ctx context.Context) (*quic.Stream, error) {
	s := l.sess.Load()
	if s == nil || s.conn.Context().Err() != nil {
		return nil, transport.ErrNotConnected
	}
	st, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open a stream through the gateway at %s: %w", l.addr, err)
	}
	return st, nil
}

// gatewayLinks returns the links to every gateway now: made at first use
// from the identity's list (or the gateways DNS gave), then changed by
// setGateways when DNS changes.
func (a *Agent) gatewayLinks() []*link {
	a.linksMu.Lock()
	defer a.linksMu.Unlock()
	if !a.linksInit {
		a.linksInit = true
		var addrs []string
		if a.srvZone != "" {
			addrs = a.resolved
		} else {
			var err error
			if addrs, err = apiclient.SplitGateways(a.identity().Gateway); err != nil {
				// Checked at start (Run); a test may give a single bad address.
				addrs = []string{a.identity().Gateway}
			}
		}
		for _, addr := range addrs {
			a.links = append(a.links, newLink(addr))
		}
		a.setOpenerLocked()
	}
	return slices.Clone(a.links)
}

// setOpenerLocked makes the opener go through the links in their order.
func (a *Agent) setOpenerLocked() {
	openers := make([]transport.StreamOpener, len(a.links))
	for i, l := range a.links {
		openers[i] = l
	}
	a.opener.Store(&transport.Failover{Openers: openers, InOrder: true})
}

// connect keeps a connection to every gateway until ctx ends, each with
// its own reconnect loop (see keep), on one UDP socket.
func (a *Agent) connect(ctx context.Context) {
	udp, tcp, err := a.bindPeerPorts()
	if err != nil {
		a.log.Error("cannot open a UDP socket to reach the gateway; the agent stays offline", "err", err)
		return
	}
	defer udp.Close() // a Transport does not close a socket it was given
	served := false   // tcp is handed to servePeers
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	a.tr.Store(tr)
	var wg sync.WaitGroup
	defer wg.Wait()
	// The same socket accepts other agents' direct connections (peers.go).
	if a.cfg.File.DirectOn() {
		if tlsConf, err := a.peerTLS(true, ""); err != nil {
			a.log.Warn("the direct path is off: no peer TLS configuration", "err", err)
		} else if ln, err := tr.Listen(tlsConf, peerQUICConfig()); err != nil {
			a.log.Warn("the direct path is off: cannot accept peer connections", "err", err)
		} else {
			a.log.Debug("accepting direct connections from other agents", "addr", udp.LocalAddr().String())
			served = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.servePeers(ctx, ln, tcp)
			}()
		}
	}
	if tcp != nil && !served {
		tcp.Close() // no peer listener to serve it
	}
	start := func(l *link) {
		lctx, cancel := context.WithCancel(ctx)
		l.stop = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.keep(lctx, tr, l)
		}()
	}
	for _, l := range a.gatewayLinks() {
		start(l)
	}
	// With --gateway srv:ZONE, gateways come and go with DNS.
	if a.watch != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.followGateways(ctx, start)
		}()
	}
}

// keep keeps a connection to one gateway until ctx ends: it dials with
// backoff and jitter, and after a renewal opens a new connection with the
// new certificate while the old one drains its streams.
//
// It says "connected" only once the QUIC handshake and the hello have
// succeeded, and logs each failure once per change of state, as a sentence
// that says what failed and what to check. A refusal by the gateway (a
// locked agent) is retried, at most every refusedBackoffMax, until the
// gateway accepts the agent again.
func (a *Agent) keep(ctx context.Context, tr *quic.Transport, l *link) {
	var sessions sync.WaitGroup
	defer sessions.Wait()

	bo := a.retry
	refused := a.retryRefused
	if refused.Min == 0 && refused.Max == 0 {
		refused = transport.Backoff{Min: 2 * time.Second, Max: refusedBackoffMax}
	}
	connected := false
	everConnected := false // for the metrics' reconnects
	last := ""
	udpBlocked := 0 // UDP dials in a row with no answer while TCP answers
	// restarted is when a connection over UDP last ended with the
	// gateway restarting (it said it was shutting down, or it answered
	// with a stateless reset), or the zero time: a timeout soon after is
	// that gateway busy taking its agents back, not blocked UDP
	// (errRestarting). An idle timeout proves nothing either way.
	var restarted time.Time
	gw := l.addr
	a.log.Info("connecting to the gateway", "gateway", gw)
	for ctx.Err() == nil {
		start := time.Now()
		var s *session
		var err error
		// Soon after the gateway restarted, it is busy taking its agents
		// back: wait longer for its answer rather than give up and start
		// over (a new handshake for both sides), and do not take its
		// silence for blocked UDP.
		hs, busy := afterRestart(restarted, time.Now())
		probe := a.probeTCP
		if busy {
			probe = func(string) error { return errRestarting }
		}
		if a.cfg.OverTCP {
			s, err = a.dialTCP(ctx, gw)
		} else {
			s, err = a.dial(ctx, tr, gw, hs)
		}
		var ce *connectError
		if err != nil && ctx.Err() == nil {
			ce = explainConnect(err, gw, probe)
			if a.cfg.OverTCP && ce.kind == failOther {
				ce = &connectError{kind: failOther, err: err,
					msg: fmt.Sprintf("cannot connect to the gateway at %s with QUIC over TCP (--quic-over-tcp): %v", gw, err)}
			}
			if ce.kind == failUDPBlocked {
				udpBlocked++
			} else {
				udpBlocked = 0
			}
			// Twice in a row: one timeout may be a gateway busy after a
			// restart, not a firewall.
			if ce.kind == failUDPBlocked && udpBlocked >= 2 && !a.cfg.OverTCP {
				// UDP is blocked, the gateway's TCP port answers: carry
				// QUIC over TCP meanwhile.
				var terr error
				if s, terr = a.dialTCP(ctx, gw); terr == nil {
					err = nil
					a.log.Warn(ce.Error()+"; meanwhile QUIC is carried over TCP (slower), and UDP is tried again every "+udpRetryInterval.String(), "gateway", gw)
				} else {
					a.log.Debug("QUIC over TCP failed too", "gateway", gw, "err", terr)
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.cfg.Metrics.handshakeFailed(ce.kind)
			d := bo.Next()
			if ce.kind == failLocked || ce.kind == failRefused {
				d = refused.Next()
			}
			connected = false
			if key := ce.Error() + ce.detail; key != last {
				last = key
				args := []any{"gateway", gw}
				if ce.detail != "" {
					args = append(args, "gateway_says", ce.detail)
				}
				a.log.Warn(ce.Error(), append(args, "next_try_in", d.Round(100*time.Millisecond))...)
			} else {
				a.log.Debug("still cannot connect to the gateway; retrying", "gateway", gw, "reason", ce.Error(),
					"next_try_in", d.Round(100*time.Millisecond))
			}
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		last = ""
		udpBlocked = 0
		bo.Reset()
		refused.Reset()
		if !connected {
			connected = true
			a.cfg.Metrics.gatewayConnected(s.tcp, everConnected)
			everConnected = true
			a.log.Info("connected to the gateway", "gateway", gw, "agent", a.identity().Name, "over", s.over())
			if a.cfg.Connected != nil {
				a.cfg.Connected(gw)
			}
		} else {
			a.log.Debug("reconnected with the renewed certificate", "gateway", gw)
		}
		a.install(ctx, l, s, &sessions)
		// Wait for the connection to end, a renewal, or, over TCP, for UDP
		// to work again: new streams then go over UDP, and the TCP
		// connection serves its streams until they end (the gateway closes
		// it then, as after a renewal).
		redial := false
		for !redial {
			var retryUDP <-chan time.Time
			if s.tcp && !a.cfg.OverTCP {
				retryUDP = time.After(udpRetryInterval)
			}
			select {
			case <-ctx.Done():
				s.conn.CloseWithError(transport.CodeShutdown, "agent shutting down")
				return
			case <-s.done:
				l.sess.CompareAndSwap(s, nil)
				connected = false
				if !s.tcp && (shuttingDown(s.conn) || statelessReset(s.conn)) {
					restarted = time.Now()
				}
				reason := closeReason(s.conn)
				a.log.Warn("disconnected from the gateway; reconnecting", "gateway", gw, "reason", reason)
				if time.Since(start) > 30*time.Second {
					bo.Reset()
				}
				d := bo.Next()
				if shuttingDown(s.conn) || statelessReset(s.conn) {
					// Every agent of a gateway that restarts hears this at
					// about the same time (at the same instant, or within
					// a heartbeat): spread the redials over a few seconds
					// rather than all within the first backoff.
					d += time.Duration(rand.Int64N(int64(restartSpread)))
				}
				if !sleep(ctx, d) {
					return
				}
				redial = true
			case <-l.renewed:
				redial = true // dial again with the new certificate
			case <-retryUDP:
				uctx, cancel := context.WithTimeout(ctx, udpRetryTimeout)
				s2, err := a.dial(uctx, tr, gw, udpRetryTimeout)
				cancel()
				if err != nil {
					a.log.Debug("UDP to the gateway still blocked", "gateway", gw, "err", err)
					continue
				}
				a.log.Info("UDP to the gateway works again: new streams go over QUIC on UDP", "gateway", gw)
				select {
				case <-s.done:
					// The TCP connection died meanwhile (a gateway that
					// restarted): this is a reconnection, reported as one.
					a.cfg.Metrics.gatewayConnected(false, true)
					if a.cfg.Connected != nil {
						a.cfg.Connected(gw)
					}
				default:
				}
				a.install(ctx, l, s2, &sessions)
				s = s2
			}
		}
	}
}

// welcomeTimeout is how long the agent waits for the gateway's welcome
// after the handshake: longer than a stream's header, since a gateway
// that just restarted verifies every agent's certificate against its
// store at once, and an agent that gave up and dialled again would only
// add to the queue.
const welcomeTimeout = 30 * time.Second

// restartSpread spreads the redials of the agents of a gateway that said
// it is shutting down.
const restartSpread = 5 * time.Second

// shuttingDown reports whether the gateway closed c saying it is shutting
// down.
func shuttingDown(c *quic.Conn) bool {
	var ae *quic.ApplicationError
	return errors.As(context.Cause(c.Context()), &ae) && ae.Remote && ae.ErrorCode == transport.CodeShutdown
}

// afterRestart says how long a dial waits for the gateway's handshake at
// now, if the gateway last restarted at restarted (the zero time: not
// seen), and whether a timeout then means a busy gateway rather than
// blocked UDP: within restartGrace of the restart.
func afterRestart(restarted, now time.Time) (handshake time.Duration, busy bool) {
	if !restarted.IsZero() && now.Sub(restarted) < restartGrace {
		return restartHandshakeTimeout, true
	}
	return transport.HandshakeTimeout, false
}

// statelessReset reports whether c ended with a stateless reset: the
// gateway at its address restarted and no longer knows it.
func statelessReset(c *quic.Conn) bool {
	var sr *quic.StatelessResetError
	return errors.As(context.Cause(c.Context()), &sr)
}

// udpRetryInterval is how often an agent on QUIC over TCP tries UDP again,
// and udpRetryTimeout how long each try waits for an answer.
const (
	udpRetryInterval = 30 * time.Second
	udpRetryTimeout  = 3 * time.Second
)

// install makes s the link's current connection and serves it; the
// previous one, if any, keeps serving its streams until it ends.
func (a *Agent) install(ctx context.Context, l *link, s *session, sessions *sync.WaitGroup) {
	if !s.tcp {
		s.hearing = transport.NewHearing(s.conn, a.beatPeriod(), time.Now())
	}
	l.sess.Swap(s)
	// This gateway tracks the direct streams served here too.
	a.reportDirect(s)
	sessions.Add(1)
	go func() {
		defer sessions.Done()
		if s.closer != nil {
			defer s.closer()
		}
		defer panics.Recover(a.log, "connection to the gateway "+l.addr, func() error {
			return s.conn.CloseWithError(transport.CodeProtocol, "internal error in the agent")
		})
		a.serve(ctx, s)
	}()
}

// over names what carries the session, for logs.
func (s *session) over() string {
	if s.tcp {
		return "quic-over-tcp"
	}
	return "udp"
}

// refusedBackoffMax caps the wait between attempts while the gateway
// refuses the agent (locked): an unlock takes effect within about this.
const refusedBackoffMax = 15 * time.Second

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// closeReason explains why a working connection ended.
func closeReason(c *quic.Conn) string {
	err := context.Cause(c.Context())
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return explainClose(ae, err).Error()
	}
	if statelessReset(c) {
		return "the gateway restarted and no longer knows this connection (it answered with a stateless reset)"
	}
	var ie *quic.IdleTimeoutError
	if errors.As(err, &ie) {
		return "the gateway stopped answering (idle timeout): check the network between this machine and the gateway"
	}
	if err != nil {
		return err.Error()
	}
	return "connection closed"
}

// dial connects to the gateway at gw (HOST:PORT) over UDP and says hello;
// handshake bounds the QUIC handshake.
func (a *Agent) dial(ctx context.Context, tr *quic.Transport, gw string, handshake time.Duration) (*session, error) {
	addr, err := net.ResolveUDPAddr("udp", gw)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(gw)
	return a.dialOn(ctx, tr, addr, host, false, handshake)
}

// dialTCP connects to the gateway at gw with QUIC carried over a TLS
// connection to its TCP port (ALPN wire.ALPNTCP), where UDP is blocked.
func (a *Agent) dialTCP(ctx context.Context, gw string) (*session, error) {
	id := a.identity()
	host, _, _ := net.SplitHostPort(gw)
	conf := a.chains.PinnedClientConfig(id.Pin, host, nil)
	conf.NextProtos = []string{wire.ALPNTCP}
	dctx, cancel := context.WithTimeout(ctx, transport.HandshakeTimeout)
	defer cancel()
	c, err := (&tls.Dialer{Config: conf}).DialContext(dctx, "tcp", gw)
	if err != nil {
		return nil, fmt.Errorf("QUIC over TCP to %s: %w", gw, err)
	}
	tc := c.(*tls.Conn)
	if tc.ConnectionState().NegotiatedProtocol != wire.ALPNTCP {
		c.Close()
		return nil, fmt.Errorf("the gateway at %s does not carry QUIC over TCP (an older version?)", gw)
	}
	pc := transport.NewStreamPacketConn(c)
	ttr := &quic.Transport{Conn: pc}
	s, err := a.dialOn(ctx, ttr, c.RemoteAddr(), host, true, transport.HandshakeTimeout)
	if err != nil {
		ttr.Close()
		pc.Close()
		return nil, err
	}
	s.tcp = true
	s.closer = func() {
		ttr.Close()
		pc.Close()
	}
	return s, nil
}

// dialOn connects to the gateway at addr on tr and says hello; host is the
// name its certificate must carry. Over TCP the hello offers no direct
// path (UDP is blocked, so other agents could not reach this one).
func (a *Agent) dialOn(ctx context.Context, tr *quic.Transport, addr net.Addr, host string, overTCP bool, handshake time.Duration) (*session, error) {
	id := a.identity()
	tlsConf := transport.ClientTLS(a.chains.PinnedClientConfig(id.Pin, host, nil),
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.cert.Load(), nil })
	dctx, cancel := context.WithTimeout(ctx, handshake)
	defer cancel()
	qc := transport.QUICConfig()
	qc.HandshakeIdleTimeout = handshake
	conn, err := tr.Dial(dctx, addr, tlsConf, qc)
	if err != nil {
		var idle *quic.IdleTimeoutError
		var hsTimeout *quic.HandshakeTimeoutError
		if ctx.Err() == nil && (dctx.Err() != nil || errors.As(err, &idle) || errors.As(err, &hsTimeout)) {
			err = &dialTimeout{after: handshake, err: err}
		}
		return nil, err
	}
	// Say hello on the control stream and wait for the welcome: a gateway
	// that refuses us closes the connection with a reason instead.
	hctx, hcancel := context.WithTimeout(ctx, welcomeTimeout)
	defer hcancel()
	ctl, err := conn.OpenStreamSync(hctx)
	if err == nil {
		err = wire.WriteHeader(ctl, wire.Header{Kind: wire.KindControl})
	}
	if err == nil {
		hello := wire.Control{Type: wire.MsgHello, Version: agentVersion(), Services: a.catalog(), Epoch: a.identity().TrustEpoch}
		if a.cfg.File.DirectOn() && !overTCP {
			hello.Direct = true
			if ua, ok := tr.Conn.LocalAddr().(*net.UDPAddr); ok {
				hello.Addrs = localCandidates(ua.Port)
			}
		}
		err = wire.WriteControl(ctl, hello)
	}
	var welcome wire.Control
	if err == nil {
		_ = ctl.SetReadDeadline(time.Now().Add(welcomeTimeout))
		welcome, err = wire.ReadControl(ctl)
		_ = ctl.SetReadDeadline(time.Time{})
	}
	if err == nil && welcome.Type != wire.MsgWelcome {
		err = fmt.Errorf("unexpected %q from the gateway", welcome.Type)
	}
	if err == nil && welcome.Direct {
		a.gwDirect.Store(true)
	}
	if err == nil && welcome.Ahead {
		a.gwAhead.Store(true)
	}
	if err != nil {
		// A refusal closes the connection: its reason is the error. Give
		// the CONNECTION_CLOSE a moment to arrive if the stream failed
		// first.
		select {
		case <-conn.Context().Done():
		case <-time.After(100 * time.Millisecond):
		}
		if cerr := context.Cause(conn.Context()); conn.Context().Err() != nil && cerr != nil {
			var ae *quic.ApplicationError
			if errors.As(cerr, &ae) && ae.Remote {
				err = cerr
			}
		}
		conn.CloseWithError(transport.CodeProtocol, "handshake failed")
		return nil, &afterHandshake{err: err}
	}
	return &session{conn: conn, ctl: ctl, done: make(chan struct{})}, nil
}

func (a *Agent) catalog() []wire.Service {
	out := make([]wire.Service, 0, len(a.cfg.File.Expose))
	for _, e := range a.cfg.File.Expose {
		sv := wire.Service{Name: e.Name, Protocol: e.Protocol}
		if e.Credentials != nil {
			sv.Credentials = e.Credentials.Vault
		}
		out = append(out, sv)
	}
	return out
}

// serve accepts the streams the gateway delivers until the connection
// ends, then waits for them.
func (a *Agent) serve(ctx context.Context, s *session) {
	defer close(s.done)
	// On shutdown every connection closes, also one still draining after
	// a renewal (its control stream reader would wait for it otherwise).
	stop := context.AfterFunc(ctx, func() { s.conn.CloseWithError(transport.CodeShutdown, "agent shutting down") })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A panic here would leave the connection without its orders:
		// close it, and connect again.
		defer panics.Recover(a.log, "control stream from the gateway", func() error {
			return s.conn.CloseWithError(transport.CodeProtocol, "internal error in the agent")
		})
		// Orders from the gateway: end a session now (deadline, revocation).
		for {
			m, err := wire.ReadControl(s.ctl)
			if err != nil {
				return
			}
			switch m.Type {
			case wire.MsgEndSession:
				a.endSession(m)
			case wire.MsgExpect:
				a.expect.add(m, s)
				if !a.peers.linked(m.Caller) {
					// A caller with a link here needs no way in.
					a.punch(m.Addrs)
				}
			case wire.MsgCommitted:
				a.expect.commit(m.Ticket)
			case wire.MsgCut:
				a.expect.cutTicket(m.Ticket, quic.StreamErrorCode(m.Code))
			case wire.MsgReport:
				a.reportTicket(s, m.Ticket)
			case wire.MsgTrust:
				a.applyTrust(m, s)
				// Say which bundle is in force now, whatever became of
				// this one, so that the gateway can count who has it.
				if err := s.send(wire.Control{Type: wire.MsgTrusted, Epoch: a.identity().TrustEpoch}); err != nil {
					a.log.Debug("tell the gateway which trust bundle is in force", "err", err)
				}
			}
		}
	}()
	if s.hearing != nil {
		// Over TCP, a gateway that died ends the TCP connection.
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer panics.Recover(a.log, "heartbeat to the gateway", func() error {
				return s.conn.CloseWithError(transport.CodeProtocol, "internal error in the agent")
			})
			a.heartbeat(s)
		}()
	}
	for {
		st, err := s.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer panics.Recover(a.log, "stream from the gateway", func() error {
				st.CancelRead(transport.StreamCanceled)
				st.CancelWrite(transport.StreamCanceled)
				return nil
			})
			a.deliver(ctx, st)
		}()
	}
}

// heartbeat probes a silent gateway: every beat (±25 %, so that a fleet
// does not act in step) it looks whether s received a packet since the
// last look, and once the gateway has been silent for longer than a
// keepalive round takes (transport.Silence), it writes wire.MsgBeat on the
// control stream at each look until something is heard again. A gateway
// that answers, as it does every keepalive, costs nothing. A gateway
// killed and restarted since answers the beat's packet with a stateless
// reset (a keepalive PING is too small for one), which ends the connection
// at once: the agent redials under the after-restart rule instead of
// waiting for the idle timeout and taking the silence for a network fault.
// Its looks (s.hearing) also make new streams try the other gateways
// first while this one is quiet (link.Quiet).
func (a *Agent) heartbeat(s *session) {
	period := a.beatPeriod()
	t := time.NewTimer(jitter(period))
	defer t.Stop()
	for seq := uint64(1); ; {
		select {
		case <-s.conn.Context().Done():
			return
		case <-t.C:
		}
		t.Reset(jitter(period))
		now := time.Now()
		if s.hearing.Look(now); !s.hearing.Quiet(now) {
			continue
		}
		if err := s.send(wire.Control{Type: wire.MsgBeat, Seq: seq}); err != nil {
			// The connection is ending, or its control stream is stuck:
			// the idle timeout or the control stream's reader sees to it.
			a.log.Debug("heartbeat to the gateway", "err", err)
			return
		}
		seq++
	}
}

// beatPeriod is how often the heartbeat looks (transport.Beat unless a
// test shortened it).
func (a *Agent) beatPeriod() time.Duration {
	if a.beat > 0 {
		return a.beat
	}
	return transport.Beat
}

// jitter returns d ±25 %.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// deliver connects a stream from the gateway to a local service.
func (a *Agent) deliver(ctx context.Context, st *quic.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	h, err := wire.ReadHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil || h.Kind != wire.KindDeliver {
		refuse(st, wire.StatusBadRequest, "expected a deliver header")
		return
	}
	if h.Target == api.SSHService {
		a.serveSSH(ctx, st, h)
		return
	}
	a.serveService(ctx, st, h.Target, h.Caller, "", expectation{}, dbauth.Credential{User: h.DBUser, Password: h.DBPassword})
}

// serveService connects a stream to the local service: a stream the
// gateway delivers, or a direct stream from another agent (ticket set, x
// its announcement: the gateways may cut it by its ticket). cred is the
// database credential the gateway leased for a service that logs in for
// the caller (dbcreds.go).
func (a *Agent) serveService(ctx context.Context, st *quic.Stream, service, caller, ticket string, x expectation, cred dbauth.Credential) {
	svc, ok := a.services[service]
	if !ok {
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("node %s exposes no service %q", a.identity().Name, service))
		return
	}
	if svc.Credentials != nil && (cred.User == "" || cred.Password == "") {
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("service %s on %s logs in to its database for the caller, and the gateway sent no credential (it needs --vault-addr)", svc.Name, a.identity().Name))
		return
	}
	var (
		lmu   sync.Mutex // guards local: the gateway's cut may come while it is dialled
		local transport.TCP
	)
	if ticket != "" {
		// The gateway cuts a direct stream by its ticket: both sides are
		// reset with its code, the stream's first.
		release, ok := a.expect.serving(ticket, x, func(code quic.StreamErrorCode) {
			st.CancelWrite(code)
			st.CancelRead(code)
			lmu.Lock()
			defer lmu.Unlock()
			if local.TCPConn != nil {
				local.Abort()
			}
		})
		defer release()
		if !ok {
			refuse(st, wire.StatusDenied, errTicketInUse.Error())
			return
		}
		defer a.adoptDirect(ticket, x)()
	}
	if svc.Credentials != nil {
		a.serveDB(ctx, st, svc, caller, ticket, x, cred, &lmu, &local)
		return
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", svc.Address)
	if err != nil {
		a.log.Warn("cannot reach local service", "service", svc.Name, "address", svc.Address, "err", err)
		refuse(st, wire.StatusDialFailed, fmt.Sprintf("service %s on %s is not reachable at %s", svc.Name, a.identity().Name, svc.Address))
		return
	}
	lmu.Lock()
	local = transport.TCP{TCPConn: c.(*net.TCPConn)}
	lmu.Unlock()
	if ticket != "" && x.committed != nil {
		// The dial overlapped the gateway's audit write; nothing passes
		// before it is durable.
		t := time.NewTimer(transport.HeaderTimeout)
		select {
		case <-x.committed:
			t.Stop()
		case <-st.Context().Done():
			t.Stop()
			c.Close()
			return
		case <-t.C:
			c.Close()
			refuse(st, wire.StatusInternal, "the gateway did not confirm this stream's audit event")
			return
		}
	}
	if err := wire.WriteReply(st, wire.Reply{Status: wire.StatusOK}); err != nil {
		c.Close()
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return
	}
	a.log.Debug("stream delivered", "service", svc.Name, "caller", caller, "direct", ticket != "")
	remote := transport.Stream{Stream: st}
	// On shutdown both sides are reset: closing the QUIC connection does
	// not wake a read from a local service that holds its side open after
	// the caller's half-close, and the agent would wait for it forever.
	stop := context.AfterFunc(ctx, func() { local.Abort(); remote.Abort() })
	defer stop()
	path := PathRelayed
	if ticket != "" {
		path = PathDirect
	}
	end := a.cfg.Metrics.streamStarted(path)
	res := transport.Splice(local, remote)
	end(res.AToB, res.BToA)
}

// refuse answers with a refusal and ends the stream cleanly, draining
// what the caller already sent so the reply is not lost to a reset.
func refuse(st *quic.Stream, status wire.Status, msg string) {
	_ = wire.WriteReply(st, wire.Reply{Status: status, Message: msg})
	_ = st.Close()
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(st, 1<<20))
	st.CancelRead(transport.StreamCanceled)
}
