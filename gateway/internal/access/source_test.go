package access_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// setSources limits role name to the networks given (none: anywhere).
func (e *env) setSources(name string, sources ...string) {
	e.t.Helper()
	ctx := context.Background()
	r, err := e.store.GetRole(ctx, name)
	must(e.t, err)
	r.Sources = sources
	must(e.t, e.store.UpdateRole(ctx, r, event(audit.RoleUpdated, name)))
}

var (
	office  = netip.MustParseAddr("10.1.2.3")
	outside = netip.MustParseAddr("192.0.2.9")
)

func TestParseSource(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":          "10.0.0.0/8",
		"10.1.2.3/8":          "10.0.0.0/8",
		"192.0.2.7":           "192.0.2.7/32",
		" 2001:db8::1 ":       "2001:db8::1/128",
		"2001:db8::/32":       "2001:db8::/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
	} {
		p, err := access.ParseSource(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseSource(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "not-an-ip", "10.0.0.0/33", "fe80::1%eth0", "::ffff:10.0.0.0/90", "10.0.0.0/8,11.0.0.0/8"} {
		if _, err := access.ParseSource(bad); err == nil || !strings.Contains(err.Error(), "is not a network") && !strings.Contains(err.Error(), "mixes") {
			t.Errorf("ParseSource(%q) = %v; want a refusal", bad, err)
		}
	}
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1", "192.0.2.1:5000": "192.0.2.1", "[2001:db8::1]:22": "2001:db8::1", "::ffff:10.1.2.3": "10.1.2.3"} {
		if got := access.ParseAddr(in); got.String() != want {
			t.Errorf("ParseAddr(%q) = %v; want %s", in, got, want)
		}
	}
	if got := access.ParseAddr("pipe"); got.IsValid() {
		t.Errorf("ParseAddr(pipe) = %v; want the zero Addr", got)
	}
}

// TestLoginFrom: a role counts only from its networks; a user with no role
// left is refused with a sentence naming the source and the role; the
// certificate's source-address is the union of the granting roles'
// networks, and none if one of them counts from anywhere.
func TestLoginFrom(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.setSources("ops", "10.0.0.0/8", "192.168.1.0/24")

	g, err := e.d.LoginFrom(ctx, e.user("alice"), office)
	must(t, err)
	if g.Refusal != "" || !cmp.Equal(g.Logins, []string{"deploy", "ubuntu"}) || !cmp.Equal(g.Sources, []string{"10.0.0.0/8", "192.168.1.0/24"}) {
		t.Errorf("alice from the office: %+v; want logins deploy,ubuntu with source-address 10.0.0.0/8,192.168.1.0/24", g)
	}

	g, err = e.d.LoginFrom(ctx, e.user("alice"), outside)
	must(t, err)
	want := "you connect from 192.0.2.9, and role ops applies only from 10.0.0.0/8, 192.168.1.0/24: connect from one of its networks or ask an admin to add yours (tunnel admin roles update ops --source CIDR)"
	if g.Refusal != want || len(g.Logins) != 0 {
		t.Errorf("alice from outside: refusal %q, logins %v; want %q and no login", g.Refusal, g.Logins, want)
	}
	g, err = e.d.LoginFrom(ctx, e.user("alice"), netip.Addr{})
	must(t, err)
	if !strings.Contains(g.Refusal, "you connect from an unknown address") {
		t.Errorf("alice from an unknown address: refusal %q; want one", g.Refusal)
	}

	// bob holds ops (limited) and dba (anywhere): from outside, dba alone.
	g, err = e.d.LoginFrom(ctx, e.user("bob"), outside)
	must(t, err)
	if g.Refusal != "" || !cmp.Equal(g.Roles, []string{"dba"}) || !cmp.Equal(g.Logins, []string{"postgres", "ubuntu"}) ||
		len(g.Sources) != 0 || len(g.Outside) != 1 || g.Outside[0].Name != "ops" {
		t.Errorf("bob from outside: %+v; want role dba only, logins postgres,ubuntu, no source-address, ops outside", g)
	}
	// From the office both count, and dba counts from anywhere: no
	// source-address.
	g, err = e.d.LoginFrom(ctx, e.user("bob"), office)
	must(t, err)
	if len(g.Sources) != 0 || len(g.Outside) != 0 || !cmp.Equal(g.Logins, []string{"deploy", "postgres", "ubuntu"}) {
		t.Errorf("bob from the office: %+v; want every login and no source-address", g)
	}
	// Both limited: the union.
	e.setSources("dba", "10.1.0.0/16", "2001:db8::/32")
	g, err = e.d.LoginFrom(ctx, e.user("bob"), office)
	must(t, err)
	if !cmp.Equal(g.Sources, []string{"10.0.0.0/8", "10.1.0.0/16", "192.168.1.0/24", "2001:db8::/32"}) {
		t.Errorf("bob with two limited roles: source-address %v; want the union", g.Sources)
	}
	// Two roles left outside: both named.
	g, err = e.d.LoginFrom(ctx, e.user("bob"), outside)
	must(t, err)
	if !strings.Contains(g.Refusal, "roles dba (10.1.0.0/16, 2001:db8::/32), ops (10.0.0.0/8, 192.168.1.0/24) apply only from their networks") {
		t.Errorf("bob from outside both: refusal %q", g.Refusal)
	}
	// Login without a source applies none (the admin API's grant).
	g, err = e.d.Login(ctx, e.user("alice"))
	must(t, err)
	if g.Refusal != "" || len(g.Sources) != 0 || len(g.Logins) != 2 {
		t.Errorf("Login without a source: %+v", g)
	}
	// A user without roles logs in from anywhere, as before.
	g, err = e.d.LoginFrom(ctx, e.user("carol"), outside)
	must(t, err)
	if g.Refusal != "" {
		t.Errorf("carol (no roles) refused: %q", g.Refusal)
	}
}

// TestSSHFrom: the roles that match a node count only from their networks,
// and the decision says which did not (SourceRefused).
func TestSSHFrom(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.setSources("ops", "10.0.0.0/8")
	g, err := e.d.SSHFrom(ctx, e.user("alice"), "web-1", office)
	must(t, err)
	if !g.AllowsLogin("ubuntu") || g.SourceRefused("ubuntu") {
		t.Errorf("alice on web-1 from the office: %+v; want ubuntu", g)
	}
	g, err = e.d.SSHFrom(ctx, e.user("alice"), "web-1", outside)
	must(t, err)
	if g.Allowed() || !g.SourceRefused("ubuntu") || !g.SourceRefused("") || len(g.Outside) != 1 || g.Outside[0].Name != "ops" {
		t.Errorf("alice on web-1 from outside: %+v; want refused for the source, ops outside", g)
	}
	// bob's dba also grants ubuntu, on db-*: on web-1 only ops matches.
	g, err = e.d.SSHFrom(ctx, e.user("bob"), "db-1", outside)
	must(t, err)
	if !g.AllowsLogin("postgres") || g.SourceRefused("postgres") {
		t.Errorf("bob on db-1 from outside (dba, anywhere): %+v", g)
	}
	// SSH without a source is a pre-check: no source applied.
	g, err = e.d.SSH(ctx, e.user("alice"), "web-1")
	must(t, err)
	if !g.AllowsLogin("ubuntu") {
		t.Errorf("SSH pre-check for alice: %+v; want ubuntu", g)
	}
}

// TestStreamFrom: a tunnel stream counts the roles from the event's source.
func TestStreamFrom(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.setSources("ops", "10.0.0.0/8")
	alice := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}
	d, err := e.d.Stream(ctx, access.StreamRequest{Caller: alice, Node: "web-1", Service: "http",
		Event: audit.Event{Actor: "alice", Subject: "web-1/http", SourceIP: outside.String()}})
	must(t, err)
	if d.Allowed || !strings.HasPrefix(d.Reason, "you connect from 192.0.2.9, and role ops applies only from 10.0.0.0/8") {
		t.Errorf("stream from outside: %+v; want refused naming the source and ops", d.Decision)
	}
	d, err = e.d.Stream(ctx, access.StreamRequest{Caller: alice, Node: "web-1", Service: "http",
		Event: audit.Event{Actor: "alice", Subject: "web-1/http", SourceIP: office.String()}})
	must(t, err)
	if !d.Allowed {
		t.Errorf("stream from the office: %+v; want allowed", d.Decision)
	}
	dec, err := e.d.DecideStreamFrom(ctx, alice, "web-1", "http", outside)
	must(t, err)
	if dec.Allowed {
		t.Errorf("DecideStreamFrom outside: %+v; want refused", dec)
	}
}

// TestReevaluateSource: a role limited to networks after the fact closes
// the sessions and streams from outside them, and keeps the others.
func TestReevaluateSource(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, en := &live{}, &ender{st: e.store, ended: map[string]string{}}
	e.d.Live, e.d.Sessions = l, en
	alice := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}
	now := time.Now()
	for id, src := range map[string]string{"s-in": office.String(), "s-out": outside.String(), "s-unknown": ""} {
		s := store.Session{ID: id, User: "alice", Node: "web-1", Login: "ubuntu", CreatedAt: now, Deadline: now.Add(time.Hour),
			State: store.SessionActive, SourceIP: src}
		must(t, e.store.CreateSession(ctx, s, nil, []audit.Event{event(audit.SessionCreated, id)}))
	}
	l.add("in", access.LiveStream{Caller: alice, Node: "web-1", Service: "http", Source: office.String()})
	l.add("out", access.LiveStream{Caller: alice, Node: "web-1", Service: "http", Source: outside.String()})
	l.add("untracked", access.LiveStream{Caller: alice, Node: "web-1", Service: "http"})

	e.setSources("ops", "10.0.0.0/8")
	must(t, e.d.Reevaluate(ctx))
	wantPrefix := access.ReasonPrefix + "you connect from 192.0.2.9, and role ops applies only from 10.0.0.0/8"
	if r := en.endedWith("s-out"); !strings.HasPrefix(r, wantPrefix) {
		t.Errorf("session from outside ended with %q; want %q...", r, wantPrefix)
	}
	if r := en.endedWith("s-unknown"); !strings.Contains(r, "you connect from an unknown address") {
		t.Errorf("session with no recorded source ended with %q; want closed", r)
	}
	if r := en.endedWith("s-in"); r != "" {
		t.Errorf("session from the office ended: %q", r)
	}
	if r := l.endedWith("out"); !strings.HasPrefix(r, wantPrefix) {
		t.Errorf("stream from outside ended with %q; want %q...", r, wantPrefix)
	}
	for _, n := range []string{"in", "untracked"} {
		if r := l.endedWith(n); r != "" {
			t.Errorf("stream %s ended: %q", n, r)
		}
	}
}

// TestSourceRefusedOnlyForTheRolesLogins: a login no role grants is not
// blamed on the source.
func TestSourceRefusedOnlyForTheRolesLogins(t *testing.T) {
	e := newEnv(t)
	e.setSources("ops", "10.0.0.0/8")
	g, err := e.d.SSHFrom(context.Background(), e.user("alice"), "web-1", outside)
	must(t, err)
	if !g.SourceRefused("deploy") || g.SourceRefused("root") || !g.SourceRefused("root,ubuntu") {
		t.Errorf("SourceRefused: deploy %v, root %v, root,ubuntu %v; want true, false, true",
			g.SourceRefused("deploy"), g.SourceRefused("root"), g.SourceRefused("root,ubuntu"))
	}
}
