package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/policy"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// handleStream serves one stream opened by p.
func (s *Server) handleStream(ctx context.Context, p peer.Peer, src string, st *quic.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	h, err := wire.ReadHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		refuse(st, wire.StatusBadRequest, "malformed stream header: "+err.Error())
		return
	}
	if h.Kind != wire.KindDial {
		refuse(st, wire.StatusBadRequest, fmt.Sprintf("a %s stream cannot be opened here", h.Kind))
		return
	}
	s.dial(ctx, p, src, st, h)
}

// refuse answers a stream with a refusal, ends it cleanly so the reply
// arrives, and drains what the caller already sent.
func refuse(st *quic.Stream, status wire.Status, msg string) {
	_ = wire.WriteReply(st, wire.Reply{Status: status, Message: msg})
	_ = st.Close()
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(st, 1<<20))
	st.CancelRead(transport.StreamCanceled)
}

func (s *Server) dial(ctx context.Context, p peer.Peer, src string, st *quic.Stream, h wire.Header) {
	node, service, ok := strings.Cut(h.Target, "/")
	if !ok || identity.ValidateName("node", node) != nil || identity.ValidateName("service", service) != nil {
		refuse(st, wire.StatusBadRequest, fmt.Sprintf("target %q is not NODE/SERVICE", h.Target))
		return
	}
	// Caps before any decision: one caller cannot take a node's capacity,
	// nor one session hold many half-open SSH streams on a node.
	sessID := ""
	if service == api.SSHService {
		sessID = h.Session
	}
	maxCaller := orDefault(s.MaxStreamsPerUser, DefaultMaxStreamsPerUser)
	if p.ID.Kind == identity.Agent {
		maxCaller = orDefault(s.MaxStreamsPerAgent, DefaultMaxStreamsPerAgent)
	}
	release, err := s.streams.admit(p.ID, sessID, maxCaller, orDefault(s.MaxStreamsPerSession, DefaultMaxStreamsPerSession))
	if err != nil {
		s.log().Debug("stream refused: over a cap", "caller", p.String(), "target", h.Target, "err", err)
		refuse(st, wire.StatusDenied, err.Error())
		return
	}
	defer release()
	// A stream decided ahead of its use is for the direct path only.
	ahead := h.Direct == wire.DirectAhead
	if ahead {
		if msg := s.aheadRefusal(p, h, node, service); msg != "" {
			refuse(st, wire.StatusUnavailable, msg)
			return
		}
	}
	// The decision and its audit event come from package access: a denial
	// is durable before the refusal goes out; an allowance is written
	// while the stream opens, and gates its first byte.
	ev := audit.Event{Actor: p.String(), Subject: h.Target, SourceIP: src}
	var d access.StreamDecision
	var sess store.Session
	var cred *streamCred // the database credential of a service that needs one
	isSSH := service == api.SSHService
	if isSSH {
		var sd policy.Decision
		sess, sd, err = s.authorizeSSH(ctx, p, node, h.Session)
		if sess.ID != "" {
			ev.Details = map[string]string{"session": sess.ID, "login": sess.Login}
		}
		if err == nil {
			d, err = s.access().Record(ctx, sd, ev)
		}
	} else {
		if _, direct := s.directFor(p, h, s.lookup(node)); direct {
			ev.Details = map[string]string{"path": "direct"}
			if ahead {
				ev.Details["ahead"] = "true"
			}
		}
		d, cred, err = s.decideStream(ctx, p, node, service, ev)
		defer cred.done()
	}
	var ce *credError
	switch {
	case errors.As(err, &ce):
		s.log().Warn("stream refused: no database credential", "caller", p.String(), "target", h.Target, "err", err)
		refuse(st, wire.StatusUnavailable, ce.msg)
		return
	case errors.Is(err, access.ErrAuditWrite):
		refuse(st, wire.StatusInternal, err.Error())
		return
	case err != nil:
		s.log().Error("authorize stream", "caller", p.String(), "target", h.Target, "err", err)
		refuse(st, wire.StatusInternal, store.Sentence(err, "the gateway cannot check its policy right now"))
		return
	case !d.Allowed:
		s.log().Info("stream denied", "caller", p.String(), "target", h.Target, "reason", d.Reason)
		refuse(st, wire.StatusDenied, d.Reason)
		return
	}
	gate := &auditGate{done: d.Audited}
	// unreached refuses a stream allowed but that cannot reach its node.
	// An SSH session ends with it: its client gives up, and nothing else
	// would end it before its deadline.
	unreached := func(msg string) {
		_ = gate.wait()
		if isSSH {
			s.Sessions.Unreached(context.WithoutCancel(ctx), sess.ID, msg)
		}
		refuse(st, wire.StatusUnavailable, msg)
	}

	target := s.lookup(node)
	if target == nil {
		unreached(fmt.Sprintf("node %s is offline (its agent is not connected)", node))
		return
	}
	if caller, ok := s.directFor(p, h, target); ok && !isSSH {
		// The direct path; the decision is durable before the grant.
		l := &liveStream{caller: p.ID, from: p.ID.Name, to: node, service: service, src: src, callerSerial: p.Serial, targetSerial: target.serial}
		if s.goDirect(p, st, node, service, h.Ticket, ahead, target, caller, l, gate, cred) {
			return
		}
	}
	if ahead {
		_ = gate.wait()
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("node %s cannot take a direct stream now; ask for it when a client comes", node))
		return
	}
	target.active.Add(1)
	defer target.active.Add(-1)
	octx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	ts, err := target.conn.OpenStreamSync(octx)
	cancel()
	if err != nil {
		unreached(fmt.Sprintf("node %s is not answering", node))
		return
	}
	// If this goroutine panics from here on, the target's stream is cut
	// too (the caller's is cut by the recover at the stream's boundary).
	spliced := false
	defer func() {
		if !spliced {
			ts.CancelRead(transport.StreamCanceled)
			ts.CancelWrite(transport.StreamCanceled)
		}
	}()
	dh := wire.Header{Kind: wire.KindDeliver, Target: service, Caller: p.ID.String()}
	if isSSH {
		dh.Session, dh.Login, dh.Deadline = sess.ID, sess.Login, sess.Deadline.Unix()
		dh.Idle = int64(s.IdleTimeout / time.Second)
		dh.Permit = s.permit(ctx, p.ID.Name, node)
	}
	cred.header(&dh)
	err = wire.WriteHeader(ts, dh)
	if err != nil {
		unreached(fmt.Sprintf("node %s is not answering", node))
		return
	}
	// The audit write overlapped the stream's opening; no byte of the
	// caller's flows, and no reply goes back, before it is durable.
	m := &meter{}
	caller := &gatedCaller{Stream: transport.Stream{Stream: st}, gate: gate, read: &m.in}
	reply := &relayedReply{Stream: transport.Stream{Stream: ts}, gate: gate, node: node, read: &m.out}
	// abort is called only when access ends (revocation, lock, removal:
	// StreamRevoked; a change of roles or policy: StreamAccessChanged):
	// both sides are reset with that code, so the caller's side can say
	// why (tunnel proxy db prints "closed by the gateway: access revoked
	// by an administrator") instead of showing a plain reset.
	//
	// Both write sides are reset first: cancelling a read side first would
	// let the splice see the error and reset the other side with its own
	// code before this one.
	l := &liveStream{caller: p.ID, session: sess.ID, to: node, service: service, src: src, path: pathOf(ctx), bytes: m,
		callerSerial: p.Serial, targetSerial: target.serial, abort: func(code quic.StreamErrorCode) {
			cred.cut()
			st.CancelWrite(code)
			ts.CancelWrite(code)
			st.CancelRead(code)
			ts.CancelRead(code)
		}}
	if p.ID.Kind == identity.User {
		l.user = p.ID.Name
	} else {
		l.from = p.ID.Name
	}
	if isSSH {
		l.meter = m
	}
	untrack := s.streams.track(l)
	defer untrack()
	res := transport.Splice(caller, reply)
	spliced = true
	untrack()
	s.log().Debug("stream done", "caller", p.String(), "target", h.Target, "up", res.AToB, "down", res.BToA, "err", res.Err)
	if isSSH {
		s.reportSession(l, res.AToB, res.BToA)
		s.Sessions.Closed(context.Background(), sess.ID)
	}
}

// authorizeSSH checks a stream to a node's SSH endpoint: only a user, with
// an active session of theirs for that node.
func (s *Server) authorizeSSH(ctx context.Context, p peer.Peer, node, id string) (store.Session, policy.Decision, error) {
	if p.ID.Kind != identity.User {
		return store.Session{}, policy.Decision{Reason: "only users open SSH sessions"}, nil
	}
	if s.Sessions == nil {
		return store.Session{}, policy.Decision{Reason: "this gateway does not broker SSH sessions"}, nil
	}
	if id == "" {
		return store.Session{}, policy.Decision{Reason: "an SSH stream needs a session: use tunnel ssh"}, nil
	}
	sess, err := s.Sessions.Check(ctx, p.ID.Name, node, id)
	if err != nil {
		return store.Session{}, policy.Decision{Reason: err.Error()}, nil
	}
	return sess, policy.Decision{Allowed: true, Reason: "session " + sess.ID}, nil
}

// auditGate waits for the audit write; both directions of a splice ask it,
// from their own goroutines.
type auditGate struct {
	once sync.Once
	done <-chan error
	err  error
}

func (g *auditGate) wait() error {
	g.once.Do(func() {
		if err := <-g.done; err != nil {
			g.err = fmt.Errorf("audit log: %w", err)
		}
	})
	return g.err
}

// gatedCaller is the caller's stream; its bytes are held until the audit
// event is written.
type gatedCaller struct {
	transport.Stream
	gate  *auditGate
	first bool
	read  *atomic.Int64 // bytes read, for live session totals
}

func (c *gatedCaller) Read(p []byte) (int, error) {
	if !c.first {
		c.first = true
		if err := c.gate.wait(); err != nil {
			return 0, err
		}
	}
	n, err := c.Stream.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// relayedReply is the target's stream. Its first Read hands the caller
// the target's reply (or a refusal if the audit write failed), then raw
// bytes; after a refusal it ends the caller's stream cleanly so the reply
// arrives whole.
type relayedReply struct {
	transport.Stream
	gate    *auditGate
	node    string
	started bool
	refused bool
	read    *atomic.Int64 // bytes read, for live session totals
}

func (r *relayedReply) Read(p []byte) (int, error) {
	if r.refused {
		return 0, io.EOF
	}
	if r.started {
		n, err := r.Stream.Read(p)
		r.read.Add(int64(n))
		return n, err
	}
	r.started = true
	_ = r.Stream.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	rep, err := wire.ReadReply(r.Stream)
	_ = r.Stream.SetReadDeadline(time.Time{})
	if err != nil {
		rep = wire.Reply{Status: wire.StatusUnavailable, Message: fmt.Sprintf("node %s did not answer the stream", r.node)}
	}
	if aerr := r.gate.wait(); aerr != nil {
		rep = wire.Reply{Status: wire.StatusInternal, Message: "the gateway cannot write its audit log; stream refused"}
	}
	if rep.Status != wire.StatusOK {
		r.refused = true
		r.Stream.Stream.CancelRead(transport.StreamCanceled)
	}
	b, err := wire.AppendReply(p[:0], rep)
	if err != nil {
		return 0, err
	}
	r.read.Add(int64(len(b)))
	return len(b), nil
}

// SSHStream is a stream to a node's SSH endpoint opened by the gateway
// itself (the jump host), tracked like any other for revocation. Splice
// Endpoint(), not the bare Stream, so that the session's bytes are
// reported while it runs.
type SSHStream struct {
	*quic.Stream
	s       *Server
	l       *liveStream
	untrack func()
}

// Endpoint is the stream as a splice endpoint that counts the bytes it
// carries: read from the node (out) and written to it (in).
func (x *SSHStream) Endpoint() transport.Endpoint {
	return countedStream{Stream: transport.Stream{Stream: x.Stream}, m: x.l.meter}
}

// Done reports the bytes carried (what was not reported yet) and ends the
// session.
func (x *SSHStream) Done(in, out int64) {
	x.untrack()
	x.s.reportSession(x.l, in, out)
	if x.s.Sessions != nil {
		x.s.Sessions.Closed(context.Background(), x.l.session)
	}
}

// countedStream counts the bytes through a stream to a node.
type countedStream struct {
	transport.Stream
	m *meter
}

func (c countedStream) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	c.m.out.Add(int64(n))
	return n, err
}

func (c countedStream) Write(p []byte) (int, error) {
	n, err := c.Stream.Write(p)
	c.m.in.Add(int64(n))
	return n, err
}

// OpenSSH opens a stream to sess.Node's SSH endpoint for sess, with logins
// the logins the node may accept (comma-separated in the header).
func (s *Server) OpenSSH(ctx context.Context, user string, sess store.Session, logins []string, src string) (*SSHStream, error) {
	target := s.lookup(sess.Node)
	if target == nil {
		return nil, fmt.Errorf("node %s is offline (its agent is not connected)", sess.Node)
	}
	id := identity.ID{Cluster: s.CA.Cluster(), Kind: identity.User, Name: user}
	ev := audit.Event{Actor: user, Subject: sess.Node + "/" + api.SSHService, SourceIP: src,
		Details: map[string]string{"session": sess.ID}}
	d, err := s.access().Record(ctx, policy.Decision{Allowed: true, Reason: "session " + sess.ID + " (jump host)"}, ev)
	if err == nil {
		err = <-d.Audited
	}
	if err != nil {
		return nil, errors.New("the gateway cannot write its audit log; connection refused")
	}
	target.active.Add(1)
	octx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	ts, err := target.conn.OpenStreamSync(octx)
	cancel()
	if err != nil {
		target.active.Add(-1)
		return nil, fmt.Errorf("node %s is not answering", sess.Node)
	}
	h := wire.Header{Kind: wire.KindDeliver, Target: api.SSHService, Caller: id.String(), Session: sess.ID,
		Login: strings.Join(logins, ","), Deadline: sess.Deadline.Unix(), Idle: int64(s.IdleTimeout / time.Second),
		Permit: s.permit(ctx, user, sess.Node)}
	if err := wire.WriteHeader(ts, h); err == nil {
		_ = ts.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
		var rep wire.Reply
		rep, err = wire.ReadReply(ts)
		_ = ts.SetReadDeadline(time.Time{})
		if err == nil {
			err = rep.Err()
		}
	}
	if err != nil {
		target.active.Add(-1)
		ts.CancelRead(transport.StreamCanceled)
		ts.CancelWrite(transport.StreamCanceled)
		return nil, fmt.Errorf("node %s refused the connection: %w", sess.Node, err)
	}
	l := &liveStream{caller: id, user: user, to: sess.Node, service: api.SSHService, session: sess.ID, meter: &meter{}, targetSerial: target.serial, abort: func(code quic.StreamErrorCode) {
		ts.CancelWrite(code)
		ts.CancelRead(code)
	}}
	x := &SSHStream{Stream: ts, s: s, l: l}
	untrack := s.streams.track(l)
	var once sync.Once
	x.untrack = func() { once.Do(func() { untrack(); target.active.Add(-1) }) }
	return x, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
