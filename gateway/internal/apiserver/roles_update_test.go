package apiserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// loginFor logs name in over HTTP with the current TOTP code of secret and
// returns the answer; the clock moves on a step first, so that each call
// uses a fresh code.
func (s *testServer) loginFor(name, secret string) api.LoginResponse {
	s.t.Helper()
	s.clock.Advance(auth.Period * time.Second)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, priv)
	if err != nil {
		s.t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		s.t.Fatal(err)
	}
	code, err := totp.GenerateCode(secret, s.clock.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	r := s.do(s.client(nil), "POST", api.PathLogin, api.LoginRequest{User: name, Password: password, OTP: code,
		CSR:          string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		SSHPublicKey: string(ssh.MarshalAuthorizedKey(sshPub))})
	if r.status != 200 {
		s.t.Fatalf("login as %s: got %d (%s); want 200", name, r.status, r.body)
	}
	var lr api.LoginResponse
	r.decode(s.t, &lr)
	return lr
}

// adminEvents returns the type, subject and chosen details of the events
// by boss after seq.
func (s *testServer) adminEvents(seq int64, keys ...string) []string {
	s.t.Helper()
	var out []string
	for _, ev := range s.eventsAfter(seq) {
		if ev.Actor != "boss" {
			continue
		}
		line := string(ev.Type) + " " + ev.Subject
		for _, k := range keys {
			if v, ok := ev.Details[k]; ok {
				line += " " + k + "=" + v
			}
		}
		out = append(out, line)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestUpdateRole(t *testing.T) {
	s := newServer(t)
	c := s.admin()
	created := s.clock.Now()
	r := s.do(c, "POST", api.PathRoles, api.Role{Name: "dev", Logins: []string{"ubuntu"}, Nodes: []string{"web-*"},
		Services: []string{"db-1/postgres"}, MaxTTL: api.Duration(2 * time.Hour)})
	if r.status != http.StatusCreated {
		t.Fatalf("create role: got %d (%s)", r.status, r.body)
	}
	secret := s.addUser("bob", "dev")
	if lr := s.loginFor("bob", secret); !cmp.Equal(lr.Logins, []string{"ubuntu"}) {
		t.Fatalf("bob's first login got logins %v; want [ubuntu]", lr.Logins)
	}
	seq := s.lastSeq()

	// Each update changes only the fields it sets.
	steps := []struct {
		name string
		in   api.RoleUpdate
		want api.Role
	}{
		{"logins", api.RoleUpdate{Logins: &[]string{"deploy", " ubuntu2 ", "deploy"}},
			api.Role{Name: "dev", Logins: []string{"deploy", "ubuntu2"}, Nodes: []string{"web-*"}, Services: []string{"db-1/postgres"}, MaxTTL: api.Duration(2 * time.Hour)}},
		{"max TTL and forwarding", api.RoleUpdate{MaxTTL: ptr(api.Duration(4 * time.Hour)), PortForwarding: ptr(true)},
			api.Role{Name: "dev", Logins: []string{"deploy", "ubuntu2"}, Nodes: []string{"web-*"}, Services: []string{"db-1/postgres"}, MaxTTL: api.Duration(4 * time.Hour), PortForwarding: true}},
		{"nodes cleared, services replaced", api.RoleUpdate{Nodes: &[]string{}, Services: &[]string{"db-*/mysql"}},
			api.Role{Name: "dev", Logins: []string{"deploy", "ubuntu2"}, Services: []string{"db-*/mysql"}, MaxTTL: api.Duration(4 * time.Hour), PortForwarding: true}},
		{"max TTL back to the cluster maximum", api.RoleUpdate{MaxTTL: ptr(api.Duration(0)), AgentForwarding: ptr(true), PortForwarding: ptr(false)},
			api.Role{Name: "dev", Logins: []string{"deploy", "ubuntu2"}, Services: []string{"db-*/mysql"}, AgentForwarding: true}},
	}
	for _, st := range steps {
		r := s.do(c, "PATCH", api.RolePath("DEV"), st.in)
		if r.status != 200 {
			t.Fatalf("%s: got %d (%s); want 200", st.name, r.status, r.body)
		}
		var got api.Role
		r.decode(t, &got)
		st.want.CreatedAt = created
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Errorf("%s: answer (-want +got):\n%s", st.name, diff)
		}
		stored, err := s.store.GetRole(context.Background(), "dev")
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(stored.Logins, st.want.Logins) || time.Duration(st.want.MaxTTL) != stored.MaxTTL ||
			!cmp.Equal(stored.Services, st.want.Services) || stored.PortForwarding != st.want.PortForwarding {
			t.Errorf("%s: stored %+v; want %+v", st.name, stored, st.want)
		}
	}

	// The next login gets the new grant.
	if lr := s.loginFor("bob", secret); !cmp.Equal(lr.Logins, []string{"deploy", "ubuntu2"}) {
		t.Errorf("bob's login after the update got logins %v; want [deploy ubuntu2]", lr.Logins)
	}

	// Refusals change nothing.
	before, err := s.store.GetRole(context.Background(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name      string
		path      string
		body      any
		status    int
		code      string
		fragments []string
	}{
		{"nothing to change", api.RolePath("dev"), api.RoleUpdate{}, 400, api.CodeBadRequest, []string{"nothing to change"}},
		{"null fields", api.RolePath("dev"), `{"logins":null}`, 400, api.CodeBadRequest, []string{"nothing to change"}},
		{"unknown field", api.RolePath("dev"), `{"superuser":true}`, 400, api.CodeBadRequest, nil},
		{"wildcard login", api.RolePath("dev"), api.RoleUpdate{Logins: &[]string{"*"}}, 400, api.CodeBadRequest, []string{"login"}},
		{"TTL above the cluster maximum", api.RolePath("dev"), api.RoleUpdate{MaxTTL: ptr(api.Duration(13 * time.Hour))}, 400, api.CodeBadRequest, []string{"exceeds"}},
		{"bad service", api.RolePath("dev"), api.RoleUpdate{Services: &[]string{"db-1"}}, 400, api.CodeBadRequest, []string{"service"}},
		{"unknown role", api.RolePath("nosuch"), api.RoleUpdate{Admin: ptr(true)}, 404, api.CodeNotFound, []string{"there is no role nosuch (tunnel admin roles ls lists them"}},
		{"bad role name", api.RolePath("-x"), api.RoleUpdate{Admin: ptr(true)}, 400, api.CodeBadRequest, []string{"role name"}},
		{"own last admin role", api.RolePath("admins"), api.RoleUpdate{Admin: ptr(false)}, 400, api.CodeBadRequest, []string{"admin API away from you", "another admin"}},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(c, "PATCH", tc.path, tc.body), tc.status, tc.code, tc.fragments...)
		})
	}
	after, err := s.store.GetRole(context.Background(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("refused updates changed the role (-before +after):\n%s", diff)
	}
	if ro, err := s.store.GetRole(context.Background(), "admins"); err != nil || !ro.Admin {
		t.Errorf("admins: got %+v, %v; want it still admin", ro, err)
	}

	// Only an admin may update a role.
	bob := s.client(s.issue(s.ca, "bob", time.Hour, true))
	wantError(t, s.do(bob, "PATCH", api.RolePath("dev"), api.RoleUpdate{Admin: ptr(true)}), 403, api.CodeForbidden, "admin role")

	want := []string{
		"role.updated dev changed=logins",
		"role.updated dev changed=max_ttl,port_forwarding",
		"role.updated dev changed=nodes,services",
		"role.updated dev changed=max_ttl,port_forwarding,agent_forwarding",
	}
	if diff := cmp.Diff(want, s.adminEvents(seq, "changed")); diff != "" {
		t.Errorf("admin events (-want +got):\n%s", diff)
	}
	s.verifyAudit()
}

func TestChangeUserRoles(t *testing.T) {
	s := newServer(t)
	c := s.admin()
	s.addRole("dev", []string{"ubuntu"}, false)
	s.addRole("ops", []string{"root"}, false)
	s.addRole("auditors", nil, true)
	secret := s.addUser("bob", "dev")
	seq := s.lastSeq()

	change := func(name string, in api.UserRolesChange) api.User {
		t.Helper()
		r := s.do(c, "POST", api.UserRolesPath(name), in)
		if r.status != 200 {
			t.Fatalf("change roles of %s by %+v: got %d (%s); want 200", name, in, r.status, r.body)
		}
		var u api.User
		r.decode(t, &u)
		return u
	}
	storedRoles := func(name string) []string {
		t.Helper()
		u, err := s.store.GetUser(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return u.Roles
	}

	if u := change("BOB", api.UserRolesChange{Grant: []string{"ops", " OPS "}}); u.Name != "bob" || !cmp.Equal(u.Roles, []string{"dev", "ops"}) {
		t.Errorf("after granting ops: got %+v; want bob with [dev ops]", u)
	}
	if lr := s.loginFor("bob", secret); !cmp.Equal(lr.Roles, []string{"dev", "ops"}) || !cmp.Equal(lr.Logins, []string{"root", "ubuntu"}) {
		t.Errorf("bob's next login got roles %v logins %v; want [dev ops] and [root ubuntu]", lr.Roles, lr.Logins)
	}
	if u := change("bob", api.UserRolesChange{Revoke: []string{"dev"}, Grant: []string{"ops"}}); !cmp.Equal(u.Roles, []string{"ops"}) {
		t.Errorf("after revoking dev: got %+v; want [ops]", u)
	}
	if lr := s.loginFor("bob", secret); !cmp.Equal(lr.Roles, []string{"ops"}) || !cmp.Equal(lr.Logins, []string{"root"}) {
		t.Errorf("bob's next login got roles %v logins %v; want [ops] and [root]", lr.Roles, lr.Logins)
	}
	if u := change("bob", api.UserRolesChange{Revoke: []string{"ops"}}); len(u.Roles) != 0 || u.Roles == nil {
		t.Errorf("after revoking every role: got %+v; want roles []", u)
	}
	// An admin may grant themselves a role, and give up an admin role
	// while another one remains.
	if u := change("boss", api.UserRolesChange{Grant: []string{"dev", "auditors"}}); !cmp.Equal(u.Roles, []string{"admins", "auditors", "dev"}) {
		t.Errorf("boss after granting dev and auditors: got %+v", u)
	}
	if u := change("boss", api.UserRolesChange{Revoke: []string{"admins"}}); !cmp.Equal(u.Roles, []string{"auditors", "dev"}) {
		t.Errorf("boss after revoking admins: got %+v", u)
	}

	refusals := []struct {
		name      string
		user      string
		body      any
		status    int
		code      string
		fragments []string
	}{
		{"nothing to change", "bob", api.UserRolesChange{}, 400, api.CodeBadRequest, []string{"nothing to change"}},
		{"unknown role granted", "bob", api.UserRolesChange{Grant: []string{"dev", "nosuch"}}, 400, api.CodeBadRequest, []string{`"nosuch"`, "does not exist"}},
		{"unknown role revoked", "bob", api.UserRolesChange{Revoke: []string{"nosuch"}}, 400, api.CodeBadRequest, []string{`"nosuch"`, "does not exist"}},
		{"bad role name", "bob", api.UserRolesChange{Grant: []string{"dev ops"}}, 400, api.CodeBadRequest, []string{"role name"}},
		{"granted and revoked", "bob", api.UserRolesChange{Grant: []string{"dev"}, Revoke: []string{"DEV"}}, 400, api.CodeBadRequest, []string{"both granted and revoked"}},
		{"unknown user", "nobody", api.UserRolesChange{Grant: []string{"dev"}}, 404, api.CodeNotFound, []string{"there is no user nobody (tunnel admin users ls lists them)"}},
		{"bad user name", "-bob", api.UserRolesChange{Grant: []string{"dev"}}, 400, api.CodeBadRequest, []string{"user name"}},
		{"unknown field", "bob", `{"grant":["dev"],"admin":true}`, 400, api.CodeBadRequest, nil},
		{"own last admin role", "boss", api.UserRolesChange{Revoke: []string{"auditors"}}, 400, api.CodeBadRequest, []string{"admin API", "another admin"}},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(c, "POST", api.UserRolesPath(tc.user), tc.body), tc.status, tc.code, tc.fragments...)
		})
	}
	if got := storedRoles("bob"); len(got) != 0 {
		t.Errorf("refusals changed bob's roles to %v", got)
	}
	if got := storedRoles("boss"); !cmp.Equal(got, []string{"auditors", "dev"}) {
		t.Errorf("refusals changed boss's roles to %v", got)
	}

	// Only an admin may change roles.
	bob := s.client(s.issue(s.ca, "bob", time.Hour, true))
	wantError(t, s.do(bob, "POST", api.UserRolesPath("bob"), api.UserRolesChange{Grant: []string{"auditors"}}), 403, api.CodeForbidden, "admin role")

	want := []string{
		"user.roles_changed bob granted=ops revoked= roles=dev,ops",
		"user.roles_changed bob granted= revoked=dev roles=ops",
		"user.roles_changed bob granted= revoked=ops roles=",
		"user.roles_changed boss granted=dev,auditors revoked= roles=admins,auditors,dev",
		"user.roles_changed boss granted= revoked=admins roles=auditors,dev",
	}
	if diff := cmp.Diff(want, s.adminEvents(seq, "granted", "revoked", "roles")); diff != "" {
		t.Errorf("admin events (-want +got):\n%s", diff)
	}
	for _, ev := range s.eventsAfter(seq) {
		if ev.Type == audit.UserRolesChanged && (ev.Outcome != audit.Success || ev.SourceIP != "127.0.0.1") {
			t.Errorf("event %+v: want a success from 127.0.0.1", ev)
		}
	}
	s.verifyAudit()
}
