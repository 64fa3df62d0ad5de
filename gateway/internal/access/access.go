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
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
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
	ActiveGrants(ctx context.Context, user string, now time.Time) ([]store.AccessRequest, error)
}

// heldRole is a role a user holds now: for good (Until zero), or through
// an approved access request (Request) until the end of its window.
type heldRole struct {
	store.Role
	Until   time.Time
	Request string
}

// granted reports whether the role is held only through a request.
func (h heldRole) granted() bool { return !h.Until.IsZero() }

// ttlAt is the role's cap at now: its TTL cap, and for a granted role no
// later than the end of the window.
func (d *Decider) ttlAt(h heldRole, now time.Time) time.Duration {
	ttl := d.roleTTL(h.Role)
	if h.granted() {
		ttl = min(ttl, h.Until.Sub(now))
	}
	return ttl
}

// roles reads the roles of u at now: the roles u holds, then the roles of
// u's approved access requests whose window holds now (the one place
// grants join a user's roles). A granted role u already holds adds
// nothing; a granted role that no longer exists is skipped; of two grants
// of one role the later end counts.
func (d *Decider) roles(ctx context.Context, rd reader, u store.User, now time.Time) ([]heldRole, error) {
	out := make([]heldRole, 0, len(u.Roles))
	for _, rn := range u.Roles {
		r, err := rd.GetRole(ctx, rn)
		if err != nil {
			return nil, fmt.Errorf("read role %s: %w", rn, err)
		}
		out = append(out, heldRole{Role: r})
	}
	grants, err := rd.ActiveGrants(ctx, u.Name, now)
	if err != nil {
		return nil, fmt.Errorf("read the access requests of %s: %w", u.Name, err)
	}
	for _, g := range grants {
		if !g.ActiveAt(now) {
			continue
		}
		i := slices.IndexFunc(out, func(h heldRole) bool { return h.Name == g.Role })
		switch {
		case i >= 0 && !out[i].granted():
			continue // held for good
		case i >= 0:
			if g.End.After(out[i].Until) {
				out[i].Until, out[i].Request = g.End, g.ID
			}
			continue
		}
		r, err := rd.GetRole(ctx, g.Role)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read role %s: %w", g.Role, err)
		}
		out = append(out, heldRole{Role: r, Until: g.End, Request: g.ID})
	}
	return out, nil
}

// LoginDecision is what a user's roles add up to at login.
type LoginDecision struct {
	// Roles are the roles held, those of approved access requests (see
	// Grants) included.
	Roles  []string
	Logins []string // the principals of the login certificate, sorted
	Admin  bool
	// MaxTTL is the longest login: the longest of the roles' caps (a
	// granted role's ending with its window), or the default TTL (at most
	// the cluster's) for a user without roles.
	MaxTTL time.Duration
	// Grants are the roles held through approved access requests, with the
	// end of each window.
	Grants []Grant
	// SSHNotAfter, when set, is the latest end of the login's SSH
	// certificate: some of its logins come only from granted roles, and
	// must not outlive the window that granted them.
	SSHNotAfter time.Time
	// Sources, when set, is the source-address of the login's SSH
	// certificate: the union of the source networks of the roles that
	// grant its logins, each of which has some (LoginFrom only).
	Sources []string
	// Outside are the roles that do not count because the caller's
	// source address is in none of their networks (LoginFrom only).
	Outside []OutsideRole
	// Refusal, when set, refuses the login: the user holds roles and none
	// counts from the caller's source address. It says so in one sentence
	// (SourceRefusal).
	Refusal string
}

// Grant is a role held through an approved access request until Until.
type Grant struct {
	Request string
	Role    string
	Until   time.Time
}

// Login decides what a login of u grants, whatever its source address
// (source networks are not applied: LoginFrom applies them).
func (d *Decider) Login(ctx context.Context, u store.User) (LoginDecision, error) {
	return d.login(ctx, u, anySource)
}

// LoginFrom decides what a login of u from src grants: the roles whose
// source networks do not contain src do not count (Outside); if u holds
// roles and none counts, the decision is a Refusal.
func (d *Decider) LoginFrom(ctx context.Context, u store.User, src netip.Addr) (LoginDecision, error) {
	return d.login(ctx, u, from(src))
}

func (d *Decider) login(ctx context.Context, u store.User, src source) (LoginDecision, error) {
	now := d.now()
	all, err := d.roles(ctx, d.Store, u, now)
	if err != nil {
		return LoginDecision{}, err
	}
	g := LoginDecision{}
	var rs []heldRole
	granting := []store.Role{}
	for _, r := range all {
		if !src.counts(r.Role) {
			g.Outside = append(g.Outside, outsideOf(r.Role))
			continue
		}
		rs = append(rs, r)
		granting = append(granting, r.Role)
	}
	if len(all) > 0 && len(rs) == 0 {
		g.Refusal = SourceRefusal(src.addr, g.Outside)
		return g, nil
	}
	if src.check {
		g.Sources = certSources(granting)
	}
	g.Roles = slices.DeleteFunc(slices.Clone(u.Roles), func(rn string) bool {
		return !slices.ContainsFunc(rs, func(h heldRole) bool { return h.Name == rn && !h.granted() })
	})
	permanent := map[string]bool{}
	for _, r := range rs {
		if !r.granted() {
			for _, l := range r.Logins {
				permanent[l] = true
			}
		}
	}
	for _, r := range rs {
		g.Logins = append(g.Logins, r.Logins...)
		g.Admin = g.Admin || r.Admin
		g.MaxTTL = max(g.MaxTTL, d.ttlAt(r, now))
		if !r.granted() {
			continue
		}
		g.Roles = append(g.Roles, r.Name)
		g.Grants = append(g.Grants, Grant{Request: r.Request, Role: r.Name, Until: r.Until})
		for _, l := range r.Logins {
			if !permanent[l] && (g.SSHNotAfter.IsZero() || r.Until.Before(g.SSHNotAfter)) {
				g.SSHNotAfter = r.Until
			}
		}
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
	// Sudo: some matching role lets its logins use sudo for the session.
	Sudo bool
	// Until, when set, is when the node stops being allowed: every
	// matching role is held through an access request, the last of which
	// ends then. MaxTTL ends no later than Until plus UntilGrace.
	Until time.Time
	// Outside are the roles that match the node but do not count because
	// the caller's source address is in none of their networks (SSHFrom
	// only).
	Outside []OutsideRole
}

// SourceRefused reports whether login (any login, if "") is refused but
// would have been allowed were it not for the caller's source address: the
// refusal to give is SourceRefusal, naming the roles in Outside.
func (g SSHDecision) SourceRefused(login string) bool {
	if login == "" {
		return !g.Allowed() && len(g.Outside) > 0
	}
	if g.AllowsLogin(login) {
		return false
	}
	for _, l := range strings.Split(login, ",") {
		for _, o := range g.Outside {
			if slices.Contains(o.Logins, l) {
				return true
			}
		}
	}
	return false
}

// UntilGrace keeps a session allowed only by access requests open a moment
// past the end of the last window, so that the re-evaluation at the end of
// the window (which tells the user which request ended) closes it rather
// than its deadline ("session expired").
const UntilGrace = 2 * time.Second

// Allowed reports whether the node is allowed at all.
func (g SSHDecision) Allowed() bool { return len(g.Logins) > 0 }

// AllowsLogin reports whether login is one of the logins allowed.
func (g SSHDecision) AllowsLogin(login string) bool { return slices.Contains(g.Logins, login) }

// SSH decides what u may do over SSH on node, whatever the source
// address: a pre-check (source networks are not applied), for callers that
// decide again with SSHFrom before a session opens. A locked user may do
// nothing.
func (d *Decider) SSH(ctx context.Context, u store.User, node string) (SSHDecision, error) {
	return d.ssh(ctx, d.Store, u, node, anySource)
}

// SSHFrom decides what u, connecting from src, may do over SSH on node:
// roles whose source networks do not contain src do not count (Outside).
// An invalid src is an unknown source, which only roles without source
// networks allow.
func (d *Decider) SSHFrom(ctx context.Context, u store.User, node string, src netip.Addr) (SSHDecision, error) {
	return d.ssh(ctx, d.Store, u, node, from(src))
}

func (d *Decider) ssh(ctx context.Context, rd reader, u store.User, node string, src source) (SSHDecision, error) {
	var g SSHDecision
	if u.Locked {
		return g, nil
	}
	now := d.now()
	rs, err := d.roles(ctx, rd, u, now)
	if err != nil {
		return SSHDecision{}, err
	}
	permanent := false
	for _, r := range rs {
		if !matchesAny(r.Nodes, node) {
			continue
		}
		if !src.counts(r.Role) {
			g.Outside = append(g.Outside, outsideOf(r.Role))
			continue
		}
		g.Roles = append(g.Roles, r.Name)
		g.Logins = append(g.Logins, r.Logins...)
		g.PortForwarding = g.PortForwarding || r.PortForwarding
		g.AgentForwarding = g.AgentForwarding || r.AgentForwarding
		g.Sudo = g.Sudo || r.Sudo
		ttl := d.roleTTL(r.Role)
		if r.granted() {
			ttl = min(ttl, r.Until.Sub(now)+UntilGrace)
			g.Until = later(g.Until, r.Until)
		} else {
			permanent = true
		}
		g.MaxTTL = max(g.MaxTTL, ttl)
	}
	if permanent {
		g.Until = time.Time{}
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

// SSHUserFrom is SSHFrom for a user read from the store by name.
func (d *Decider) SSHUserFrom(ctx context.Context, user, node string, src netip.Addr) (SSHDecision, error) {
	u, err := d.Store.GetUser(ctx, user)
	if err != nil {
		return SSHDecision{}, err
	}
	return d.SSHFrom(ctx, u, node, src)
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

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
