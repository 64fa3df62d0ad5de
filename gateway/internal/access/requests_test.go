package access_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// grantEnv is env plus an approving role lead (approves dba and ops) held
// by dave, a clock, and helpers to ask for and approve requests.
type grantEnv struct {
	*env
	clk *clock
}

func newGrantEnv(t *testing.T) *grantEnv {
	e := newEnv(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	must(t, e.store.CreateRole(ctx, store.Role{Name: "lead", Approve: []string{"dba", "ops"}, CreatedAt: now}, event(audit.RoleCreated, "lead")))
	must(t, e.store.CreateUser(ctx, store.User{Name: "dave", PasswordHash: "x", Roles: []string{"lead"}, CreatedAt: now}, event(audit.UserCreated, "dave")))
	g := &grantEnv{env: e, clk: &clock{t: now}}
	e.d.Clock = g.clk.now
	return g
}

// ask records a pending request of user for role, for dur.
func (g *grantEnv) ask(id, user, role string, dur time.Duration) store.AccessRequest {
	g.t.Helper()
	now := g.clk.now()
	r := store.AccessRequest{ID: id, User: user, Role: role, Reason: "INC-1", Duration: dur, CreatedAt: now, PendingUntil: now.Add(access.PendingTTL)}
	must(g.t, g.store.CreateRequest(context.Background(), r, event(audit.RequestCreated, id)))
	r.State = store.RequestPending
	return r
}

// approve approves r now with the window the Decider computes.
func (g *grantEnv) approve(r store.AccessRequest) store.AccessRequest {
	g.t.Helper()
	ctx := context.Background()
	role, err := g.store.GetRole(ctx, r.Role)
	must(g.t, err)
	must(g.t, g.d.CheckDecide(ctx, g.user("dave"), r))
	start, end := g.d.Window(role, r, g.clk.now())
	got, err := g.store.DecideRequest(ctx, r.ID, store.RequestDecision{State: store.RequestApproved, By: "dave", At: start, Start: start, End: end},
		event(audit.RequestApproved, r.ID))
	must(g.t, err)
	return got
}

// TestGrantWithinWindowOnly: an approved request adds its role to the
// requester's logins, SSH, streams and tunnel ls from the approval to the
// end of the window, and not a moment outside it; the login's SSH
// certificate and the session's deadline end with the window.
func TestGrantWithinWindowOnly(t *testing.T) {
	g := newGrantEnv(t)
	ctx := context.Background()
	carol := identity.ID{Cluster: "prod", Kind: identity.User, Name: "carol"}
	allowed := func() (bool, bool, bool) {
		t.Helper()
		ssh, err := g.d.SSH(ctx, g.user("carol"), "db-1")
		must(t, err)
		st, err := g.d.DecideStream(ctx, carol, "db-1", "postgres")
		must(t, err)
		nodes, err := g.d.Visible(ctx, g.user("carol"), false, []store.Agent{{Name: "db-1"}}, nil)
		must(t, err)
		return ssh.Allowed(), st.Allowed, len(nodes) == 1
	}
	r := g.ask("r1", "carol", "dba", time.Hour)
	if s, st, v := allowed(); s || st || v {
		t.Fatalf("pending request: ssh %v, stream %v, visible %v; want nothing", s, st, v)
	}
	login, err := g.d.Login(ctx, g.user("carol"))
	must(t, err)
	if len(login.Logins) != 0 || len(login.Grants) != 0 {
		t.Fatalf("login with a pending request = %+v; want no logins, no grants", login)
	}

	r = g.approve(r)
	start := g.clk.now()
	if !r.End.Equal(start.Add(time.Hour)) {
		t.Fatalf("window end = %v; want approval + 1h = %v", r.End, start.Add(time.Hour))
	}
	if s, st, v := allowed(); !s || !st || !v {
		t.Fatalf("approved request: ssh %v, stream %v, visible %v; want all", s, st, v)
	}
	login, err = g.d.Login(ctx, g.user("carol"))
	must(t, err)
	if !slices.Contains(login.Roles, "dba") || !slices.Contains(login.Logins, "postgres") {
		t.Errorf("login = %+v; want role dba and login postgres", login)
	}
	if len(login.Grants) != 1 || login.Grants[0].Request != "r1" || !login.Grants[0].Until.Equal(r.End) {
		t.Errorf("login grants = %+v; want r1 until %v", login.Grants, r.End)
	}
	if !login.SSHNotAfter.Equal(r.End) || login.MaxTTL > time.Hour {
		t.Errorf("login SSHNotAfter %v, MaxTTL %v; want the window's end %v and at most 1h", login.SSHNotAfter, login.MaxTTL, r.End)
	}
	g.clk.set(start.Add(40 * time.Minute))
	ssh, err := g.d.SSH(ctx, g.user("carol"), "db-1")
	must(t, err)
	if ssh.MaxTTL > 20*time.Minute+access.UntilGrace || !ssh.Until.Equal(r.End) {
		t.Errorf("SSH 20 minutes before the end: MaxTTL %v, Until %v; want at most 20m+grace and %v", ssh.MaxTTL, ssh.Until, r.End)
	}
	// bob holds dba for good: no window.
	bob, err := g.d.SSH(ctx, g.user("bob"), "db-1")
	must(t, err)
	if !bob.Until.IsZero() {
		t.Errorf("bob's SSH Until = %v; want none", bob.Until)
	}

	g.clk.set(r.End.Add(-time.Microsecond))
	if s, _, _ := allowed(); !s {
		t.Error("just before the end of the window: not allowed; want allowed")
	}
	g.clk.set(r.End)
	if s, st, v := allowed(); s || st || v {
		t.Errorf("at the end of the window: ssh %v, stream %v, visible %v; want nothing", s, st, v)
	}
	g.clk.set(start.Add(-time.Second))
	if s, _, _ := allowed(); s {
		t.Error("before the approval: allowed; want not")
	}
}

// TestGrantCappedByMaxTTL: the window is what was asked, at most the
// role's max TTL (ops: 4 h), and the cluster's for a role without one.
func TestGrantCappedByMaxTTL(t *testing.T) {
	g := newGrantEnv(t)
	r := g.approve(g.ask("r-long", "carol", "ops", 10*time.Hour))
	if got := r.End.Sub(r.Start); got != 4*time.Hour {
		t.Errorf("window of 10h asked for ops (max 4h) = %v; want 4h", got)
	}
	g.max = 2 * time.Hour
	r = g.approve(g.ask("r-dba", "carol", "dba", 10*time.Hour))
	if got := r.End.Sub(r.Start); got != 2*time.Hour {
		t.Errorf("window of 10h asked for dba (cluster max 2h) = %v; want 2h", got)
	}
	login, err := g.d.Login(context.Background(), g.user("carol"))
	must(t, err)
	if login.MaxTTL > 4*time.Hour {
		t.Errorf("login MaxTTL = %v; want at most 4h", login.MaxTTL)
	}
}

// TestDecideRefusals: nobody decides their own request; only a holder of
// a role whose Approve lists the requested role decides, and the admin
// role alone does not; a decided request is not decided again.
func TestDecideRefusals(t *testing.T) {
	g := newGrantEnv(t)
	ctx := context.Background()
	// dave approves dba; give him a request of his own.
	mine := g.ask("r-self", "dave", "dba", time.Hour)
	other := g.ask("r-carol", "carol", "dba", time.Hour)
	for _, c := range []struct {
		who  string
		r    store.AccessRequest
		want string
	}{
		{"dave", mine, "you cannot approve or deny your own request"},
		{"bob", other, "none of your roles may decide requests for role dba"},
		{"root", other, "none of your roles may decide requests for role dba"},
		{"carol", other, "you cannot approve or deny your own request"},
	} {
		err := g.d.CheckDecide(ctx, g.user(c.who), c.r)
		var ref *access.Refusal
		if !errors.As(err, &ref) || !strings.Contains(ref.Msg, c.want) {
			t.Errorf("CheckDecide(%s, %s) = %v; want a refusal saying %q", c.who, c.r.ID, err, c.want)
		}
	}
	if err := g.d.CheckDecide(ctx, g.user("dave"), other); err != nil {
		t.Errorf("CheckDecide(dave, carol's dba request) = %v; want allowed", err)
	}
	decided := g.approve(other)
	if err := g.d.CheckDecide(ctx, g.user("dave"), decided); err == nil {
		t.Error("CheckDecide of an approved request: allowed; want refused")
	}
	// A role held through a request approves nothing: carol gets lead
	// through a request (approved by... nobody may: lead is not in any
	// Approve), so she is given one directly in the store.
	now := g.clk.now()
	must(t, g.store.CreateRole(ctx, store.Role{Name: "lead-approver", Approve: []string{"lead"}, CreatedAt: now}, event(audit.RoleCreated, "x")))
	lr := g.ask("r-lead", "carol", "lead", time.Hour)
	_, err := g.store.DecideRequest(ctx, lr.ID, store.RequestDecision{State: store.RequestApproved, By: "x", At: now, Start: now, End: now.Add(time.Hour)}, event(audit.RequestApproved, lr.ID))
	must(t, err)
	roles, err := g.d.Approving(ctx, g.user("carol"))
	must(t, err)
	if len(roles) != 0 {
		t.Errorf("carol, holding lead through a request, approves %v; want nothing", roles)
	}
}

// TestRevokeRules: an approved grant is revoked by an approver of the
// role, an admin or the requester; not by someone else, and not while
// pending.
func TestRevokeRules(t *testing.T) {
	g := newGrantEnv(t)
	ctx := context.Background()
	pending := g.ask("r-p", "carol", "dba", time.Hour)
	if err := g.d.CheckRevoke(ctx, g.user("dave"), false, pending); err == nil {
		t.Error("revoking a pending request: allowed; want refused")
	}
	r := g.approve(g.ask("r-a", "carol", "dba", time.Hour))
	for _, c := range []struct {
		who   string
		admin bool
		ok    bool
	}{{"dave", false, true}, {"root", true, true}, {"carol", false, true}, {"alice", false, false}, {"bob", false, false}} {
		err := g.d.CheckRevoke(ctx, g.user(c.who), c.admin, r)
		if (err == nil) != c.ok {
			t.Errorf("CheckRevoke(%s) = %v; want allowed %v", c.who, err, c.ok)
		}
	}
}

// TestReevaluateGrantEnded: at the end of the window (the store still says
// approved) and on revocation, the live sessions and streams that only the
// grant allowed close with a reason naming the request; those another
// role allows stay.
func TestReevaluateGrantEnded(t *testing.T) {
	g := newGrantEnv(t)
	ctx := context.Background()
	l, en := &live{}, &ender{st: g.store, ended: map[string]string{}}
	g.d.Live, g.d.Sessions = l, en
	carol := identity.ID{Cluster: "prod", Kind: identity.User, Name: "carol"}
	alice := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}

	expiring := g.approve(g.ask("r-exp", "carol", "dba", time.Hour))
	revoked := g.approve(g.ask("r-rev", "alice", "dba", 3*time.Hour))
	g.session("s-carol", "carol", "db-1", "postgres")
	g.session("s-alice-db", "alice", "db-1", "postgres")
	g.session("s-alice-web", "alice", "web-1", "ubuntu") // ops, hers for good
	l.add("carol-db", access.LiveStream{Caller: carol, Node: "db-1", Service: "postgres"})
	l.add("alice-web", access.LiveStream{Caller: alice, Node: "web-1", Service: "http"})

	must(t, g.d.Reevaluate(ctx))
	if r := en.endedWith("s-carol"); r != "" {
		t.Fatalf("within the window, carol's session ended: %q", r)
	}

	g.clk.set(expiring.End)
	must(t, g.d.Reevaluate(ctx))
	want := "your access request r-exp for role dba expired at "
	if r := en.endedWith("s-carol"); !strings.HasPrefix(r, want) {
		t.Errorf("carol's session at the end of the window ended with %q; want %q...", r, want)
	}
	if r := l.endedWith("carol-db"); !strings.HasPrefix(r, want) {
		t.Errorf("carol's stream at the end of the window ended with %q; want %q...", r, want)
	}
	if r := en.endedWith("s-alice-db"); r != "" {
		t.Errorf("alice's session, within her window, ended: %q", r)
	}

	_, changed, err := g.store.EndRequest(ctx, revoked.ID, store.RequestRevoked, "dave", "incident closed", g.clk.now(), event(audit.RequestRevoked, revoked.ID))
	must(t, err)
	if !changed {
		t.Fatal("EndRequest(revoked) changed nothing")
	}
	must(t, g.d.Reevaluate(ctx))
	want = "your access request r-rev for role dba was revoked by dave (incident closed)"
	if r := en.endedWith("s-alice-db"); r != want {
		t.Errorf("alice's session after revocation ended with %q; want %q", r, want)
	}
	if r := en.endedWith("s-alice-web"); r != "" {
		t.Errorf("alice's web session (role ops, hers for good) ended: %q", r)
	}
	if r := l.endedWith("alice-web"); r != "" {
		t.Errorf("alice's web stream (role ops) ended: %q", r)
	}
}

// TestGrantEndedNamesTheLastToEnd: of a user's requests that ended lately,
// the one that ended last is named: here an older request revoked now,
// while a newer one expired minutes ago (it came first in the list).
func TestGrantEndedNamesTheLastToEnd(t *testing.T) {
	g := newGrantEnv(t)
	ctx := context.Background()
	en := &ender{st: g.store, ended: map[string]string{}}
	g.d.Live, g.d.Sessions = &live{}, en

	older := g.approve(g.ask("r-older", "carol", "dba", time.Hour))
	g.clk.set(g.clk.now().Add(time.Second))
	newer := g.approve(g.ask("r-newer", "carol", "dba", time.Minute))
	g.clk.set(newer.End.Add(2 * time.Minute)) // the newer one expired; the older one still holds
	must(t, g.d.Reevaluate(ctx))
	g.session("s-carol", "carol", "db-1", "postgres")
	must(t, g.d.Reevaluate(ctx))
	if r := en.endedWith("s-carol"); r != "" {
		t.Fatalf("within the older request's window, carol's session ended: %q", r)
	}

	_, _, err := g.store.EndRequest(ctx, older.ID, store.RequestRevoked, "dave", "done", g.clk.now(), event(audit.RequestRevoked, older.ID))
	must(t, err)
	must(t, g.d.Reevaluate(ctx))
	want := "your access request r-older for role dba was revoked by dave (done)"
	if r := en.endedWith("s-carol"); r != want {
		t.Errorf("carol's session ended with %q; want %q", r, want)
	}
}

// TestCheckRequestOnePendingPerRole: a user with a pending request for a
// role cannot ask for it again until it is decided or lapses; another
// role, or after the decision, they can.
func TestCheckRequestOnePendingPerRole(t *testing.T) {
	g := newGrantEnv(t)
	ctx := context.Background()
	carol := g.user("carol")
	if _, err := g.d.CheckRequest(ctx, carol, "dba", time.Hour); err != nil {
		t.Fatalf("a first request: %v", err)
	}
	first := g.ask("r-1", "carol", "dba", time.Hour)
	_, err := g.d.CheckRequest(ctx, carol, "dba", time.Hour)
	if err == nil || !strings.Contains(err.Error(), "you already asked for role dba (request r-1, waiting for a decision until ") {
		t.Errorf("a second request for the same role while the first is pending: %v; want refused, naming it", err)
	}
	if _, err := g.d.CheckRequest(ctx, carol, "ops", time.Hour); err != nil {
		t.Errorf("a request for another role: %v", err)
	}
	g.approve(first)
	if _, err := g.d.CheckRequest(ctx, carol, "dba", time.Hour); err != nil {
		t.Errorf("a request once the first was approved: %v", err)
	}
	g.ask("r-2", "carol", "ops", time.Hour)
	g.clk.set(g.clk.now().Add(access.PendingTTL))
	if _, err := g.d.CheckRequest(ctx, carol, "ops", time.Hour); err != nil {
		t.Errorf("a request once the pending one lapsed: %v", err)
	}
}
