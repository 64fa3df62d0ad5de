package access_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// env is a Decider over a real store holding:
//
//	roles  ops:   logins ubuntu,deploy on web-*, services web-*/http, 4 h, port forwarding
//	       dba:   login postgres on db-*, services db-*/postgres, no TTL (the cluster's)
//	       admin: admin, nothing else, 30 min
//	users  bob (ops, dba), alice (ops), root (admin), carol (none), lou (ops, locked)
//	agents web-1, db-1, app-1
//	rules  1 allow app-1 -> db-1/postgres, 2 allow app-* -> web-*/*, 3 deny app-1 -> web-9/*
type env struct {
	t     *testing.T
	store *sqlitestore.Store
	d     *access.Decider
	audit *auditor
	max   time.Duration
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	must(t, err)
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, store: st, audit: &auditor{}, max: certs.ClusterMaxTTL}
	now := time.Now()
	for _, r := range []store.Role{
		{Name: "ops", Logins: []string{"ubuntu", "deploy"}, Nodes: []string{"web-*"}, Services: []string{"web-*/http"}, MaxTTL: 4 * time.Hour, PortForwarding: true, CreatedAt: now},
		{Name: "dba", Logins: []string{"postgres", "ubuntu"}, Nodes: []string{"db-*"}, Services: []string{"db-*/postgres"}, AgentForwarding: true, CreatedAt: now},
		{Name: "admin", Admin: true, MaxTTL: 30 * time.Minute, CreatedAt: now},
	} {
		must(t, st.CreateRole(ctx, r, event(audit.RoleCreated, r.Name)))
	}
	for name, roles := range map[string][]string{"bob": {"ops", "dba"}, "alice": {"ops"}, "root": {"admin"}, "carol": nil, "lou": {"ops"}} {
		must(t, st.CreateUser(ctx, store.User{Name: name, PasswordHash: "x", Roles: roles, CreatedAt: now}, event(audit.UserCreated, name)))
	}
	must(t, st.SetUserLocked(ctx, "lou", true, event(audit.UserLocked, "lou")))
	for _, a := range []string{"web-1", "db-1", "app-1"} {
		h := sha256.Sum256([]byte("token-" + a))
		tok := store.JoinToken{Hash: hex.EncodeToString(h[:]), Agent: a, CreatedBy: "admin", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		must(t, st.CreateJoinToken(ctx, tok, event(audit.TokenCreated, a)))
		_, err := st.ConsumeJoinToken(ctx, tok.Hash, now, event(audit.AgentEnrolled, a))
		must(t, err)
	}
	for _, r := range []store.PolicyRule{
		{Effect: store.Allow, From: "app-1", To: "db-1/postgres"},
		{Effect: store.Allow, From: "app-*", To: "web-*/*"},
		{Effect: store.Deny, From: "app-1", To: "web-9/*"},
	} {
		r.CreatedBy, r.CreatedAt = "admin", now
		_, err := st.AddPolicyRule(ctx, r, event(audit.PolicyAdded, r.To))
		must(t, err)
	}
	e.d = &access.Decider{Store: st, Audit: e.audit, MaxTTL: func() time.Duration { return e.max }}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func event(typ audit.Type, subject string) audit.Event {
	return audit.Event{Time: time.Now(), Type: typ, Actor: "admin", Subject: subject, Outcome: audit.Success}
}

func (e *env) user(name string) store.User {
	e.t.Helper()
	u, err := e.store.GetUser(context.Background(), name)
	must(e.t, err)
	return u
}

// auditor records events; fail makes every write fail.
type auditor struct {
	mu     sync.Mutex
	events []audit.Event
	fail   error
}

func (a *auditor) Write(_ context.Context, ev audit.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.events = append(a.events, ev)
	return nil
}

func (a *auditor) Append(ev audit.Event) <-chan error {
	ch := make(chan error, 1)
	ch <- a.Write(context.Background(), ev)
	return ch
}

func (a *auditor) take() []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	evs := a.events
	a.events = nil
	return evs
}

func TestLogin(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		user    string
		cluster time.Duration
		want    access.LoginDecision
	}{
		{user: "alice", cluster: 12 * time.Hour, want: access.LoginDecision{Roles: []string{"ops"}, Logins: []string{"deploy", "ubuntu"}, MaxTTL: 4 * time.Hour}},
		// A role without a TTL has the cluster's; the longest role wins;
		// logins deduplicated and sorted.
		{user: "bob", cluster: 12 * time.Hour, want: access.LoginDecision{Roles: []string{"ops", "dba"}, Logins: []string{"deploy", "postgres", "ubuntu"}, MaxTTL: 12 * time.Hour}},
		// The cluster caps every role.
		{user: "alice", cluster: 2 * time.Hour, want: access.LoginDecision{Roles: []string{"ops"}, Logins: []string{"deploy", "ubuntu"}, MaxTTL: 2 * time.Hour}},
		{user: "root", cluster: 12 * time.Hour, want: access.LoginDecision{Roles: []string{"admin"}, Admin: true, MaxTTL: 30 * time.Minute}},
		// No role: the default TTL, capped by the cluster.
		{user: "carol", cluster: 12 * time.Hour, want: access.LoginDecision{MaxTTL: certs.DefaultUserTTL}},
		{user: "carol", cluster: 10 * time.Minute, want: access.LoginDecision{MaxTTL: 10 * time.Minute}},
	} {
		e.max = tt.cluster
		got, err := e.d.Login(context.Background(), e.user(tt.user))
		must(t, err)
		slices.Sort(got.Roles)
		slices.Sort(tt.want.Roles)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Login(%s), cluster max %v (-want +got):\n%s", tt.user, tt.cluster, diff)
		}
	}
}

func TestLoginRoleGone(t *testing.T) {
	e := newEnv(t)
	u := e.user("alice")
	u.Roles = append(u.Roles, "nope")
	if _, err := e.d.Login(context.Background(), u); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Login with a missing role: %v; want ErrNotFound", err)
	}
}

func TestSSH(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		user, node string
		want       access.SSHDecision
	}{
		{user: "alice", node: "web-1", want: access.SSHDecision{Logins: []string{"deploy", "ubuntu"}, MaxTTL: 4 * time.Hour, PortForwarding: true, Roles: []string{"ops"}}},
		{user: "alice", node: "db-1"},
		{user: "bob", node: "db-1", want: access.SSHDecision{Logins: []string{"postgres", "ubuntu"}, MaxTTL: 12 * time.Hour, AgentForwarding: true, Roles: []string{"dba"}}},
		{user: "root", node: "web-1"},
		{user: "carol", node: "web-1"},
		{user: "lou", node: "web-1"}, // locked
	} {
		got, err := e.d.SSH(context.Background(), e.user(tt.user), tt.node)
		must(t, err)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("SSH(%s, %s) (-want +got):\n%s", tt.user, tt.node, diff)
		}
		if got.Allowed() != (len(tt.want.Logins) > 0) {
			t.Errorf("SSH(%s, %s).Allowed() = %v", tt.user, tt.node, got.Allowed())
		}
	}
	if _, err := e.d.SSHUser(context.Background(), "nobody", "web-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SSHUser(nobody): %v; want ErrNotFound", err)
	}
}

func TestStream(t *testing.T) {
	e := newEnv(t)
	agent := func(n string) identity.ID { return identity.ID{Cluster: "prod", Kind: identity.Agent, Name: n} }
	user := func(n string) identity.ID { return identity.ID{Cluster: "prod", Kind: identity.User, Name: n} }
	for _, tt := range []struct {
		caller        identity.ID
		node, service string
		allowed       bool
		reason        string
	}{
		{agent("app-1"), "db-1", "postgres", true, "allowed by rule 1"},
		{agent("app-2"), "db-1", "postgres", false, "default deny"},
		{agent("app-2"), "web-3", "http", true, "allowed by rule 2"},
		{agent("app-1"), "web-9", "http", false, "denied by rule 3"}, // deny wins
		{user("alice"), "web-1", "http", true, "allowed by role ops"},
		{user("alice"), "db-1", "postgres", false, "none of your roles allows db-1/postgres"},
		{user("bob"), "db-1", "postgres", true, "allowed by role dba"},
		{user("root"), "db-1", "postgres", false, "none of your roles"}, // admin is not access
		{user("lou"), "web-1", "http", false, "your account is locked"},
		{user("ghost"), "web-1", "http", false, "your account is gone"},
		{identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gw"}, "web-1", "http", false, "unknown caller kind"},
	} {
		ev := audit.Event{Actor: tt.caller.String(), Subject: tt.node + "/" + tt.service, SourceIP: "192.0.2.7"}
		d, err := e.d.Stream(context.Background(), access.StreamRequest{Caller: tt.caller, Node: tt.node, Service: tt.service, Event: ev})
		must(t, err)
		if d.Allowed != tt.allowed || !strings.Contains(d.Reason, tt.reason) {
			t.Errorf("Stream(%s -> %s/%s) = %v %q; want %v %q", tt.caller, tt.node, tt.service, d.Allowed, d.Reason, tt.allowed, tt.reason)
		}
		if tt.allowed {
			if d.Audited == nil {
				t.Fatalf("Stream(%s -> %s/%s): allowed with no audit write to wait for", tt.caller, tt.node, tt.service)
			}
			must(t, <-d.Audited)
		}
		evs := e.audit.take()
		want := audit.StreamDenied
		if tt.allowed {
			want = audit.StreamAllowed
		}
		if len(evs) != 1 || evs[0].Type != want || evs[0].Reason != d.Reason || evs[0].Actor != tt.caller.String() || evs[0].SourceIP != "192.0.2.7" {
			t.Errorf("Stream(%s -> %s/%s) audited %+v; want one %s event with the reason", tt.caller, tt.node, tt.service, evs, want)
		}
	}
}

// TestStreamDeniedAuditFails: a refusal that cannot be recorded is not
// given as a reason the log does not show.
func TestStreamDeniedAuditFails(t *testing.T) {
	e := newEnv(t)
	e.audit.fail = errors.New("disk full")
	_, err := e.d.Stream(context.Background(), access.StreamRequest{Caller: identity.ID{Kind: identity.Agent, Name: "app-2"}, Node: "db-1", Service: "postgres"})
	if !errors.Is(err, access.ErrAuditWrite) {
		t.Errorf("denied stream with a failing audit log: %v; want ErrAuditWrite", err)
	}
	d, err := e.d.Stream(context.Background(), access.StreamRequest{Caller: identity.ID{Kind: identity.Agent, Name: "app-1"}, Node: "db-1", Service: "postgres"})
	must(t, err)
	if werr := <-d.Audited; werr == nil {
		t.Error("allowed stream with a failing audit log: Audited yielded nil")
	}
}

// TestPolicyCache: rules are cached until ReloadPolicy.
func TestPolicyCache(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	app := identity.ID{Kind: identity.Agent, Name: "app-1"}
	d, err := e.d.DecideStream(ctx, app, "db-1", "postgres")
	must(t, err)
	if !d.Allowed {
		t.Fatalf("before: %+v", d)
	}
	must(t, e.store.DeletePolicyRule(ctx, 1, event(audit.PolicyRemoved, "1")))
	if d, _ := e.d.DecideStream(ctx, app, "db-1", "postgres"); !d.Allowed {
		t.Errorf("the cache was not used: %+v", d)
	}
	must(t, e.d.ReloadPolicy(ctx))
	if d, _ := e.d.DecideStream(ctx, app, "db-1", "postgres"); d.Allowed {
		t.Errorf("after ReloadPolicy: %+v; want denied", d)
	}
}

func TestVisible(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agents, err := e.store.ListAgents(ctx)
	must(t, err)
	online := map[string]api.Agent{
		"web-1": {Name: "web-1", Online: true, Services: []string{"http", "ssh"}},
		"app-1": {Name: "app-1", Online: true, Services: []string{"metrics"}},
	}
	for _, tt := range []struct {
		user  string
		admin bool
		want  []api.Node
	}{
		// Nodes named by a role, with the services the roles allow.
		{user: "alice", want: []api.Node{{Name: "web-1", Online: true, Services: []string{"http"}}}},
		// db-1 is offline: listed, without services, for a service pattern that could match it.
		{user: "bob", want: []api.Node{{Name: "db-1", Services: []string{}}, {Name: "web-1", Online: true, Services: []string{"http"}}}},
		{user: "carol", want: []api.Node{}},
		{user: "root", admin: true, want: []api.Node{
			{Name: "app-1", Online: true, Services: []string{"metrics"}}, {Name: "db-1", Services: []string{}}, {Name: "web-1", Online: true, Services: []string{"http", "ssh"}}}},
	} {
		got, err := e.d.Visible(ctx, e.user(tt.user), tt.admin, agents, online)
		must(t, err)
		slices.SortFunc(got, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Visible(%s) (-want +got):\n%s", tt.user, diff)
		}
	}
}

// TestRecordSSHDenial: a refused session is recorded, with the reason the
// user is shown, before the refusal goes out.
func TestRecordSSHDenial(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	must(t, e.d.RecordSSHDenial(ctx, "alice", "db-1", "root", "192.0.2.9", "none of your roles allows db-1"))
	evs, err := e.store.ListAudit(ctx, store.AuditFilter{})
	must(t, err)
	last := evs[len(evs)-1]
	if last.Type != audit.SessionCreated || last.Outcome != audit.Failure || last.Actor != "alice" || last.Subject != "db-1" ||
		last.Reason != "none of your roles allows db-1" || last.SourceIP != "192.0.2.9" || last.Details["login"] != "root" {
		t.Errorf("recorded %+v; want a failed session.created of alice on db-1 as root with the reason", last)
	}
}
