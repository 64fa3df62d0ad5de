package access

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/policy"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// ErrAuditWrite: a refusal's audit event could not be written; the caller
// is told so rather than a reason the log does not show.
var ErrAuditWrite = errors.New("the gateway cannot write its audit log; stream refused")

// StreamRequest is a stream to decide: who asks for which node/service.
type StreamRequest struct {
	Caller  identity.ID
	Node    string
	Service string
	// Event is the audit event to write with the decision: Actor,
	// Subject, SourceIP and Details filled by the caller; Type, Outcome,
	// Reason and Time by Stream.
	Event audit.Event
}

// StreamDecision is the answer for a stream.
type StreamDecision struct {
	policy.Decision
	// Audited yields the result of the stream.allowed event's write, for an
	// allowed stream: no byte may flow before it has yielded nil.
	Audited <-chan error
}

// Stream decides whether caller may reach node/service and writes the
// decision to the audit log: a denial synchronously (ErrAuditWrite if
// that fails), an allowance asynchronously (StreamDecision.Audited), so
// that the stream opens while it is written. An error other than
// ErrAuditWrite means the decision could not be made.
//
// A user's roles count only from their source networks: the source is
// req.Event.SourceIP (not applied when it is empty).
func (d *Decider) Stream(ctx context.Context, req StreamRequest) (StreamDecision, error) {
	src := anySource
	if req.Event.SourceIP != "" {
		src = from(ParseAddr(req.Event.SourceIP))
	}
	dec, err := d.decideStream(ctx, d.Store, req.Caller, req.Node, req.Service, src)
	if err != nil {
		return StreamDecision{}, err
	}
	return d.Record(ctx, dec, req.Event)
}

// Record writes the audit event of a stream decision made elsewhere (an
// SSH stream, decided by its session) as Stream does.
func (d *Decider) Record(ctx context.Context, dec policy.Decision, ev audit.Event) (StreamDecision, error) {
	ev.Time = d.now()
	ev.Reason = dec.Reason
	if !dec.Allowed {
		ev.Type, ev.Outcome = audit.StreamDenied, audit.Failure
		if err := d.writeDenial(ctx, ev); err != nil {
			d.log().Error("write audit event", "type", ev.Type, "err", err)
			return StreamDecision{Decision: dec}, ErrAuditWrite
		}
		return StreamDecision{Decision: dec}, nil
	}
	ev.Type, ev.Outcome = audit.StreamAllowed, audit.Success
	return StreamDecision{Decision: dec, Audited: d.append(ev)}, nil
}

// writeDenial writes a denial through Denials when set (folded), else as
// write does.
func (d *Decider) writeDenial(ctx context.Context, ev audit.Event) error {
	return d.Denials.Write(ctx, d.write, ev)
}

func (d *Decider) write(ctx context.Context, ev audit.Event) error {
	if d.Audit != nil {
		return d.Audit.Write(ctx, ev)
	}
	_, err := d.Store.AppendAudit(ctx, ev)
	return err
}

func (d *Decider) append(ev audit.Event) <-chan error {
	if d.Audit != nil {
		return d.Audit.Append(ev)
	}
	ch := make(chan error, 1)
	_, err := d.Store.AppendAudit(context.Background(), ev)
	ch <- err
	return ch
}

// DecideStream decides, without auditing, whether caller may reach
// node/service now: an agent by the policy rules, a user by the services
// of their roles (read now, so a change applies to the next stream).
// Default deny; for agents a matching deny rule wins. Source networks are
// not applied: DecideStreamFrom applies them.
func (d *Decider) DecideStream(ctx context.Context, caller identity.ID, node, service string) (policy.Decision, error) {
	return d.decideStream(ctx, d.Store, caller, node, service, anySource)
}

// DecideStreamFrom is DecideStream for a caller connecting from src: a
// user's roles whose source networks do not contain src do not count.
func (d *Decider) DecideStreamFrom(ctx context.Context, caller identity.ID, node, service string, src netip.Addr) (policy.Decision, error) {
	return d.decideStream(ctx, d.Store, caller, node, service, from(src))
}

func (d *Decider) decideStream(ctx context.Context, rd reader, caller identity.ID, node, service string, src source) (policy.Decision, error) {
	switch caller.Kind {
	case identity.Agent:
		rules, err := d.PolicyRules(ctx)
		if err != nil {
			return policy.Decision{}, err
		}
		return policy.Decide(rules, caller.Name, node, service), nil
	case identity.User:
		u, err := rd.GetUser(ctx, caller.Name)
		if errors.Is(err, store.ErrNotFound) {
			return policy.Decision{Reason: "your account is gone"}, nil
		}
		if err != nil {
			return policy.Decision{}, err
		}
		return d.userStream(ctx, rd, u, node, service, src)
	}
	return policy.Decision{Reason: "unknown caller kind"}, nil
}

func (d *Decider) userStream(ctx context.Context, rd reader, u store.User, node, service string, src source) (policy.Decision, error) {
	if u.Locked {
		return policy.Decision{Reason: "your account is locked"}, nil
	}
	rs, err := d.roles(ctx, rd, u, d.now())
	if err != nil {
		return policy.Decision{}, err
	}
	var outside []OutsideRole
	for _, r := range rs {
		if policy.AllowedByPatterns(r.Services, node, service) {
			if !src.counts(r.Role) {
				outside = append(outside, outsideOf(r.Role))
				continue
			}
			why := "allowed by role " + r.Name
			if r.granted() {
				why += " (access request " + r.Request + ", until " + r.Until.UTC().Format(time.RFC3339) + ")"
			}
			return policy.Decision{Allowed: true, Reason: why}, nil
		}
	}
	if len(outside) > 0 {
		return policy.Decision{Reason: SourceRefusal(src.addr, outside)}, nil
	}
	return policy.Decision{Reason: fmt.Sprintf("none of your roles allows %s/%s: ask an admin to add it to a role with --service %s/%s", node, service, node, service)}, nil
}

// ReloadPolicy reads the agent policy rules again; call it after every
// change of them (the admin API does, and so does a change arriving from
// another gateway).
func (d *Decider) ReloadPolicy(ctx context.Context) error {
	rs, err := d.Store.ListPolicyRules(ctx)
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	rules := make([]policy.Rule, 0, len(rs))
	for _, r := range rs {
		rules = append(rules, policy.Rule{ID: r.ID, Allow: r.Effect == store.Allow, From: r.From, To: r.To})
	}
	d.mu.Lock()
	d.rules, d.loaded = rules, true
	d.mu.Unlock()
	return nil
}

// PolicyRules returns the cached agent policy rules, loading them on first
// use.
func (d *Decider) PolicyRules(ctx context.Context) ([]policy.Rule, error) {
	d.mu.Lock()
	loaded, rules := d.loaded, d.rules
	d.mu.Unlock()
	if loaded {
		return rules, nil
	}
	if err := d.ReloadPolicy(ctx); err != nil {
		return nil, err
	}
	return d.PolicyRules(ctx)
}
