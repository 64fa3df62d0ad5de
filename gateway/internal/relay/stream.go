package relay

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/policy"
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

// authorize decides whether p may reach node/service.
func (s *Server) authorize(ctx context.Context, p peer.Peer, node, service string) (policy.Decision, error) {
	switch p.ID.Kind {
	case identity.Agent:
		rules, err := s.policyRules(ctx)
		if err != nil {
			return policy.Decision{}, err
		}
		return policy.Decide(rules, p.ID.Name, node, service), nil
	case identity.User:
		// Roles are read now, not at connection time, so a change applies
		// to the next stream.
		u, err := s.Store.GetUser(ctx, p.ID.Name)
		if err != nil {
			return policy.Decision{}, err
		}
		if u.Locked {
			return policy.Decision{Reason: "your account is locked"}, nil
		}
		for _, rn := range u.Roles {
			r, err := s.Store.GetRole(ctx, rn)
			if err != nil {
				return policy.Decision{}, err
			}
			if policy.AllowedByPatterns(r.Services, node, service) {
				return policy.Decision{Allowed: true, Reason: "allowed by role " + r.Name}, nil
			}
		}
		return policy.Decision{Reason: fmt.Sprintf("none of your roles allows %s/%s: ask an admin to add it to a role with --service %s/%s", node, service, node, service)}, nil
	}
	return policy.Decision{Reason: "unknown caller kind"}, nil
}

func (s *Server) dial(ctx context.Context, p peer.Peer, src string, st *quic.Stream, h wire.Header) {
	node, service, ok := strings.Cut(h.Target, "/")
	if !ok || identity.ValidateName("node", node) != nil || identity.ValidateName("service", service) != nil {
		refuse(st, wire.StatusBadRequest, fmt.Sprintf("target %q is not NODE/SERVICE", h.Target))
		return
	}
	ev := audit.Event{Time: s.now(), Actor: p.String(), Subject: h.Target, SourceIP: src}
	d, err := s.authorize(ctx, p, node, service)
	if err != nil {
		s.log().Error("authorize stream", "caller", p.String(), "target", h.Target, "err", err)
		refuse(st, wire.StatusInternal, "the gateway cannot check its policy right now")
		return
	}
	if !d.Allowed {
		ev.Type, ev.Outcome, ev.Reason = audit.StreamDenied, audit.Failure, d.Reason
		// A refusal waits for its record too: if it cannot be written, the
		// caller learns that rather than a reason the log does not show.
		if err := s.Audit.Write(ctx, ev); err != nil {
			refuse(st, wire.StatusInternal, "the gateway cannot write its audit log; stream refused")
			return
		}
		s.log().Info("stream denied", "caller", p.String(), "target", h.Target, "reason", d.Reason)
		refuse(st, wire.StatusDenied, d.Reason)
		return
	}
	ev.Type, ev.Outcome, ev.Reason = audit.StreamAllowed, audit.Success, d.Reason
	audited := s.Audit.Append(ev)
	gate := &auditGate{done: audited}

	target := s.lookup(node)
	if target == nil {
		_ = gate.wait()
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("node %s is offline (its agent is not connected)", node))
		return
	}
	target.active.Add(1)
	defer target.active.Add(-1)
	octx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	ts, err := target.conn.OpenStreamSync(octx)
	cancel()
	if err != nil {
		_ = gate.wait()
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("node %s is not answering", node))
		return
	}
	err = wire.WriteHeader(ts, wire.Header{Kind: wire.KindDeliver, Target: service, Caller: p.ID.String(), Session: h.Session})
	if err != nil {
		_ = gate.wait()
		ts.CancelRead(transport.StreamCanceled)
		ts.CancelWrite(transport.StreamCanceled)
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("node %s is not answering", node))
		return
	}
	// The audit write overlapped the stream's opening; no byte of the
	// caller's flows, and no reply goes back, before it is durable.
	caller := &gatedCaller{Stream: transport.Stream{Stream: st}, gate: gate}
	reply := &relayedReply{Stream: transport.Stream{Stream: ts}, gate: gate, node: node}
	res := transport.Splice(caller, reply)
	s.log().Debug("stream done", "caller", p.String(), "target", h.Target, "up", res.AToB, "down", res.BToA, "err", res.Err)
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
}

func (c *gatedCaller) Read(p []byte) (int, error) {
	if !c.first {
		c.first = true
		if err := c.gate.wait(); err != nil {
			return 0, err
		}
	}
	return c.Stream.Read(p)
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
}

func (r *relayedReply) Read(p []byte) (int, error) {
	if r.refused {
		return 0, io.EOF
	}
	if r.started {
		return r.Stream.Read(p)
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
	return len(b), nil
}
