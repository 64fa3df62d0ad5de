package login_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// limit sets the source networks of role name.
func (e *env) limit(name string, sources ...string) {
	e.t.Helper()
	ctx := context.Background()
	r, err := e.store.GetRole(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	r.Sources = sources
	ev := audit.Event{Time: e.clock.Now(), Type: audit.RoleUpdated, Actor: "system", Subject: name, Outcome: audit.Success}
	if err := e.store.UpdateRole(ctx, r, ev); err != nil {
		e.t.Fatal(err)
	}
}

// TestLoginSourceRefused: a user whose every role is limited to networks
// the login does not come from (192.0.2.7) is refused with a sentence
// naming the source and the role, and the refusal is audited.
func TestLoginSourceRefused(t *testing.T) {
	e := newEnv(t)
	e.addRole("office", []string{"ubuntu"}, 0, false)
	e.limit("office", "10.0.0.0/8")
	secret := e.addUser("alice", "office")

	seq := e.lastSeq()
	resp, err := e.login(e.request("alice", password, e.code(secret, 0)))
	le := wantCode(t, resp, err, 403, api.CodeForbidden)
	want := "you connect from 192.0.2.7, and role office applies only from 10.0.0.0/8: connect from one of its networks or ask an admin to add yours (tunnel admin roles update office --source CIDR)"
	if le.Message != want {
		t.Errorf("refusal %q; want %q", le.Message, want)
	}
	if diff := cmp.Diff([]shortEvent{failure("alice", "outside the source networks of every role")}, e.eventsAfter(seq)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
	e.verifyAudit()
}

// TestLoginSourceAddress: the SSH certificate of a login carries
// source-address, the union of the networks of the roles that grant its
// logins; none when one of them counts from anywhere; a role outside is
// left out with a warning.
func TestLoginSourceAddress(t *testing.T) {
	e := newEnv(t)
	e.addRole("office", []string{"ubuntu"}, 0, false)
	e.addRole("vpn", []string{"deploy"}, 0, false)
	e.addRole("lab", []string{"lab"}, 0, false)
	e.addRole("anywhere", []string{"ops"}, 0, false)
	e.limit("office", "192.0.2.0/24")
	e.limit("vpn", "192.0.2.7/32", "2001:db8::/32")
	e.limit("lab", "10.0.0.0/8")

	login := func(t *testing.T, user string) *api.LoginResponse {
		t.Helper()
		secret := e.addUser(user, map[string][]string{
			"alice": {"office", "vpn"}, "bob": {"office", "anywhere"}, "carol": {"office", "lab"},
		}[user]...)
		resp, err := e.login(e.request(user, password, e.code(secret, 0)))
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		e.clock.Advance(30e9) // next TOTP step for the next user
		return resp
	}
	t.Run("union", func(t *testing.T) {
		resp := login(t, "alice")
		c := sshCert(t, resp.SSHCertificate)
		if got, want := c.CriticalOptions["source-address"], "192.0.2.0/24,192.0.2.7/32,2001:db8::/32"; got != want {
			t.Errorf("source-address = %q; want %q", got, want)
		}
		if !cmp.Equal(c.ValidPrincipals, []string{"deploy", "ubuntu"}) {
			t.Errorf("principals %v", c.ValidPrincipals)
		}
	})
	t.Run("unrestricted role", func(t *testing.T) {
		resp := login(t, "bob")
		c := sshCert(t, resp.SSHCertificate)
		if got, ok := c.CriticalOptions["source-address"]; ok {
			t.Errorf("source-address = %q; want none (role anywhere counts from anywhere)", got)
		}
	})
	t.Run("role outside", func(t *testing.T) {
		resp := login(t, "carol")
		c := sshCert(t, resp.SSHCertificate)
		if got := c.CriticalOptions["source-address"]; got != "192.0.2.0/24" {
			t.Errorf("source-address = %q; want 192.0.2.0/24 (lab does not count)", got)
		}
		if !cmp.Equal(c.ValidPrincipals, []string{"ubuntu"}) || !cmp.Equal(resp.Roles, []string{"office"}) {
			t.Errorf("principals %v roles %v; want ubuntu from office only", c.ValidPrincipals, resp.Roles)
		}
		if !strings.Contains(resp.Warning, "you log in from 192.0.2.7, outside the source networks of role lab") {
			t.Errorf("warning %q; want it to name lab", resp.Warning)
		}
		evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var last audit.Event
		for _, ev := range evs {
			if ev.Type == audit.LoginSuccess {
				last = ev
			}
		}
		if last.Details["outside_roles"] != "lab" || last.Details["source_address"] != "192.0.2.0/24" {
			t.Errorf("login.success details %v; want outside_roles lab, source_address 192.0.2.0/24", last.Details)
		}
	})
}
