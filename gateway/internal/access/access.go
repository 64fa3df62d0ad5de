// Package access is the gateway's one home for access decisions: from the
// store (users, roles, agent policy rules) it answers, for a caller, what a
// login grants (Login), what an SSH session to a node may do (SSH), whether
// a stream to node/service may flow (Stream) and which nodes the caller
// sees (Visible). Each answer is a decision value; the decisions that are
// audited today (streams, session refusals) are written to the audit log
// here, with the ordering the callers rely on. The agent policy cache and
// its reload live here too, and Reevaluate closes the live sessions and
// streams that a change of roles or rules no longer allows.
//
// Login, sessions, relay, jump host and the admin API are thin callers.
package access

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/policy"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Auditor is the audit log writer access decisions go to
// (*auditlog.Writer).
type Auditor interface {
	// Append queues ev and returns a channel that yields the write's
	// result once it is durable.
	Append(ev audit.Event) <-chan error
	// Write appends ev and waits until it is durable.
	Write(ctx context.Context, ev audit.Event) error
}

// Decider answers access questions. Fill the exported fields; the zero
// policy cache loads itself on first use.
type Decider struct {
	Store store.Store
	// MaxTTL is the cluster's longest user certificate
	// (certs.Authority.MaxTTL); it caps every role's.
	MaxTTL func() time.Duration
	// Audit receives stream decisions; nil means the store's AppendAudit,
	// synchronously.
	Audit Auditor
	// Live lists and ends what runs now, for Reevaluate; nil means
	// nothing is re-evaluated.
	Live Live
	// Sessions ends the sessions Reevaluate finds no longer allowed; nil
	// means sessions are not re-evaluated.
	Sessions SessionEnder
	// Denials, if set, records stream denials folded (auditlog.Folder): the
	// first of a kind (caller, source, reason) at once, repeats as one
	// event with a count per interval, so that a caller refused again and
	// again cannot fill the audit log. Nil writes each one.
	Denials *auditlog.Folder
	Clock   func() time.Time
	Log     *slog.Logger

	mu     sync.Mutex // guards rules and loaded
	rules  []policy.Rule
	loaded bool

	remu sync.Mutex // serialises Reevaluate
}

func (d *Decider) now() time.Time {
	if d.Clock == nil {
		return time.Now()
	}
	return d.Clock()
}

func (d *Decider) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// clusterMax is the cluster's cap on any certificate's lifetime.
func (d *Decider) clusterMax() time.Duration {
	if d.MaxTTL == nil {
		return certs.ClusterMaxTTL
	}
	return d.MaxTTL()
}

// roleTTL is one role's cap: its own, at most the cluster's; zero means
// the cluster's. The one place the role TTL cap is computed.
func (d *Decider) roleTTL(r store.Role) time.Duration {
	limit, cluster := r.MaxTTL, d.clusterMax()
	if limit == 0 || limit > cluster {
		return cluster
	}
	return limit
}

// reader is what decisions read: the store, or a memo of it for one
// re-evaluation pass.
type reader interface {
	GetUser(ctx context.Context, name string) (store.User, error)
	GetRole(ctx context.Context, name string) (store.Role, error)
}

// roles reads the roles of u.
func (d *Decider) roles(ctx context.Context, rd reader, u store.User) ([]store.Role, error) {
	out := make([]store.Role, 0, len(u.Roles))
	for _, rn := range u.Roles {
		r, err := rd.GetRole(ctx, rn)
		if err != nil {
			return nil, fmt.Errorf("read role %s: %w", rn, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// LoginDecision is what a user's roles add up to at login.
type LoginDecision struct {
	Roles  []string
	Logins []string // the principals of the login certificate, sorted
	Admin  bool
	// MaxTTL is the longest login: the longest of the roles' caps, or the
	// default TTL (at most the cluster's) for a user without roles.
	MaxTTL time.Duration
}

// Login decides what a login of u grants.
func (d *Decider) Login(ctx context.Context, u store.User) (LoginDecision, error) {
	rs, err := d.roles(ctx, d.Store, u)
	if err != nil {
		return LoginDecision{}, err
	}
	g := LoginDecision{Roles: slices.Clone(u.Roles)}
	for _, r := range rs {
		g.Logins = append(g.Logins, r.Logins...)
		g.Admin = g.Admin || r.Admin
		g.MaxTTL = max(g.MaxTTL, d.roleTTL(r))
	}
	if g.MaxTTL == 0 {
		// No role: the default TTL, capped by the cluster.
		g.MaxTTL = min(certs.DefaultUserTTL, d.clusterMax())
	}
	slices.Sort(g.Logins)
	g.Logins = slices.Compact(g.Logins)
	return g, nil
}

// SSHDecision is what a user's roles allow on one node.
type SSHDecision struct {
	// Logins are the logins allowed on the node, sorted; none means the
	// node is not allowed.
	Logins []string
	// MaxTTL caps the session's deadline: the longest cap of the roles
	// that match the node.
	MaxTTL time.Duration
	// PortForwarding and AgentForwarding: some matching role allows them.
	PortForwarding, AgentForwarding bool
	// Roles are the roles that match the node.
	Roles []string
}

// Allowed reports whether the node is allowed at all.
func (g SSHDecision) Allowed() bool { return len(g.Logins) > 0 }

// AllowsLogin reports whether login is one of the logins allowed.
func (g SSHDecision) AllowsLogin(login string) bool { return slices.Contains(g.Logins, login) }

// SSH decides what u may do over SSH on node. A locked user may do
// nothing.
func (d *Decider) SSH(ctx context.Context, u store.User, node string) (SSHDecision, error) {
	return d.ssh(ctx, d.Store, u, node)
}

func (d *Decider) ssh(ctx context.Context, rd reader, u store.User, node string) (SSHDecision, error) {
	var g SSHDecision
	if u.Locked {
		return g, nil
	}
	rs, err := d.roles(ctx, rd, u)
	if err != nil {
		return SSHDecision{}, err
	}
	for _, r := range rs {
		if !matchesAny(r.Nodes, node) {
			continue
		}
		g.Roles = append(g.Roles, r.Name)
		g.Logins = append(g.Logins, r.Logins...)
		g.PortForwarding = g.PortForwarding || r.PortForwarding
		g.AgentForwarding = g.AgentForwarding || r.AgentForwarding
		g.MaxTTL = max(g.MaxTTL, d.roleTTL(r))
	}
	slices.Sort(g.Logins)
	g.Logins = slices.Compact(g.Logins)
	return g, nil
}

// SSHUser is SSH for a user read from the store by name.
func (d *Decider) SSHUser(ctx context.Context, user, node string) (SSHDecision, error) {
	u, err := d.Store.GetUser(ctx, user)
	if err != nil {
		return SSHDecision{}, err
	}
	return d.SSH(ctx, u, node)
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if policy.Match(p, name) {
			return true
		}
	}
	return false
}

// RecordSSHDenial writes the audit event of a refused session (a
// session.created failure naming the node and login) with reason, the
// refusal the user is shown. It is synchronous: the refusal is sent only
// once it is recorded.
func (d *Decider) RecordSSHDenial(ctx context.Context, user, node, login, src, reason string) error {
	ev := audit.Event{Time: d.now(), Type: audit.SessionCreated, Actor: user, Subject: node, Outcome: audit.Failure,
		Reason: reason, SourceIP: src, Details: map[string]string{"login": login}}
	if _, err := d.Store.AppendAudit(ctx, ev); err != nil {
		return fmt.Errorf("record session refusal: %w", err)
	}
	return nil
}
