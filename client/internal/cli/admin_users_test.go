package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func TestUsersGrantRevoke(t *testing.T) {
	answerRoles := func(roles ...string) func(adminRequest) (int, any) {
		return func(adminRequest) (int, any) {
			return 200, api.User{Name: "bob", Roles: roles, CreatedAt: time.Unix(1900000000, 0).UTC()}
		}
	}
	g := newAdminTestGateway(t, answerRoles("dev", "ops"))
	tests := []struct {
		args []string
		want adminRequest
		out  string
	}{
		{[]string{"grant", "bob", "dev", "ops"},
			adminRequest{Method: "POST", Path: "/v1/admin/users/bob/roles", Body: map[string]any{"grant": []any{"dev", "ops"}}},
			"User bob now holds the roles dev, ops."},
		{[]string{"revoke", "bob", "admins"},
			adminRequest{Method: "POST", Path: "/v1/admin/users/bob/roles", Body: map[string]any{"revoke": []any{"admins"}}},
			"User bob now holds the roles dev, ops."},
	}
	for i, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := g.run(append([]string{"admin", "users"}, tc.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			reqs := g.requests()
			if len(reqs) != i+1 {
				t.Fatalf("the gateway got %d requests; want %d", len(reqs), i+1)
			}
			if diff := cmp.Diff(tc.want, reqs[i]); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if strings.TrimSpace(out) != tc.out {
				t.Errorf("got output %q; want %q", out, tc.out)
			}
		})
	}

	g.setAnswer(answerRoles())
	out, err := g.run("admin", "users", "revoke", "bob", "dev", "ops")
	if err != nil || strings.TrimSpace(out) != "User bob now holds no role." {
		t.Errorf("revoking every role: got %q, %v", out, err)
	}
	out, err = g.run("admin", "users", "grant", "bob", "dev", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var u api.User
	if err := json.Unmarshal([]byte(out), &u); err != nil || u.Name != "bob" {
		t.Errorf("--json printed %q (%v); want the user as JSON", out, err)
	}

	// Refused before asking the gateway.
	n := len(g.requests())
	for _, args := range [][]string{{"grant"}, {"grant", "bob"}, {"revoke", "bob"}} {
		_, err := g.run(append([]string{"admin", "users"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "takes NAME ROLE...") {
			t.Errorf("users %s: got %v; want a hint that NAME and ROLE are needed", strings.Join(args, " "), err)
		}
	}
	if len(g.requests()) != n {
		t.Errorf("refused commands reached the gateway")
	}

	// The gateway's refusal is shown as it is.
	g.setAnswer(func(adminRequest) (int, any) {
		return 400, api.Error{Code: api.CodeBadRequest, Message: `role "nosuch" does not exist: see tunnel admin roles ls`}
	})
	if _, err := g.run("admin", "users", "grant", "bob", "nosuch"); err == nil || !strings.Contains(err.Error(), `role "nosuch" does not exist`) {
		t.Errorf("grant of an unknown role: got %v", err)
	}
}

func TestUsersGrantRevokeHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"admin", "users", "--help"}, []string{"grant", "revoke"}},
		{[]string{"admin", "users", "grant", "--help"}, []string{"NAME ROLE...", "at once", "next login", "--json"}},
		{[]string{"admin", "users", "revoke", "--help"}, []string{"NAME ROLE...", "at once", "closed", "users lock", "--json"}},
	} {
		out, err := run(t, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
			}
		}
	}
}
