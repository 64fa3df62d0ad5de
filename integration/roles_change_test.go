package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// TestRoleChangesReachTheNextLogin changes a role and a user's roles with
// the CLI, as an operator would, and checks that the user's next login
// gets the new grant without the user being removed and enrolled again.
func TestRoleChangesReachTheNextLogin(t *testing.T) {
	c := startCluster(t)
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu", "--max-ttl", "2h")
	admin.must("admin", "roles", "add", "ops", "--login", "root")
	const bobPW = "bob's long password"
	var enr api.Enrollment
	if err := json.Unmarshal([]byte(admin.must("admin", "users", "add", "bob", "--role", "dev",
		"--password-file", writeSecret(t, bobPW), "--json")), &enr); err != nil {
		t.Fatalf("users add --json: %v", err)
	}
	bob := c.newUserHandle("bob", bobPW, newOTPSource(enr.Secret))
	granted := func() ([]string, []string) {
		t.Helper()
		bob.login()
		p, err := profile.Dir{Path: bob.home}.Load()
		if err != nil {
			t.Fatal(err)
		}
		return p.Roles, p.Logins
	}
	if roles, logins := granted(); !slices.Equal(roles, []string{"dev"}) || !slices.Equal(logins, []string{"ubuntu"}) {
		t.Fatalf("bob's first login: roles %v logins %v; want [dev] [ubuntu]", roles, logins)
	}

	out := admin.must("admin", "roles", "update", "dev", "--login", "ubuntu", "--login", "deploy")
	if !strings.Contains(out, "Updated role dev") || !strings.Contains(out, "deploy, ubuntu") || !strings.Contains(out, "2h0m0s") {
		t.Errorf("roles update printed %q; want the updated role, its max TTL kept", out)
	}
	if roles, logins := granted(); !slices.Equal(roles, []string{"dev"}) || !slices.Equal(logins, []string{"deploy", "ubuntu"}) {
		t.Errorf("bob's login after roles update: roles %v logins %v; want [dev] [deploy ubuntu]", roles, logins)
	}

	if out := admin.must("admin", "users", "grant", "bob", "ops"); !strings.Contains(out, "User bob now holds the roles dev, ops") {
		t.Errorf("users grant printed %q", out)
	}
	if roles, logins := granted(); !slices.Equal(roles, []string{"dev", "ops"}) || !slices.Equal(logins, []string{"deploy", "root", "ubuntu"}) {
		t.Errorf("bob's login after users grant: roles %v logins %v; want [dev ops] [deploy root ubuntu]", roles, logins)
	}
	if out := admin.must("admin", "users", "revoke", "bob", "dev"); !strings.Contains(out, "User bob now holds the roles ops") {
		t.Errorf("users revoke printed %q", out)
	}
	if roles, logins := granted(); !slices.Equal(roles, []string{"ops"}) || !slices.Equal(logins, []string{"root"}) {
		t.Errorf("bob's login after users revoke: roles %v logins %v; want [ops] [root]", roles, logins)
	}

	// Mistakes are refused with a sentence, and change nothing.
	if se := admin.fails("admin", "users", "grant", "bob", "nosuch"); !strings.Contains(se, `role "nosuch" does not exist`) {
		t.Errorf("granting an unknown role: %q", se)
	}
	if se := admin.fails("admin", "roles", "update", "nosuch", "--admin"); !strings.Contains(se, "nosuch") {
		t.Errorf("updating an unknown role: %q", se)
	}
	if se := admin.fails("admin", "roles", "update", "dev"); !strings.Contains(se, "nothing to change") {
		t.Errorf("updating with no flag: %q", se)
	}

	// Every change is audited, and the chain holds.
	var evs []audit.Event
	if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatalf("audit ls --json: %v", err)
	}
	var got []string
	for _, ev := range evs {
		if ev.Type == audit.RoleUpdated || ev.Type == audit.UserRolesChanged {
			got = append(got, string(ev.Type)+" "+ev.Subject+" by "+ev.Actor)
		}
	}
	want := []string{"role.updated dev by alice", "user.roles_changed bob by alice", "user.roles_changed bob by alice"}
	if !slices.Equal(got, want) {
		t.Errorf("audit events %q; want %q", got, want)
	}
	if out := admin.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify: %q", out)
	}
}
