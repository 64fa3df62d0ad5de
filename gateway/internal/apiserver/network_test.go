package apiserver_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestNetworkRulesAPI: rules are canonicalised, validated, recorded with
// their event and applied (NetworkChanged) before the answer; a
// duplicate, a malformed rule and a rule that would lock the caller out
// are refused with a message saying what to do; --force overrides the
// guard; non-admins are refused.
func TestNetworkRulesAPI(t *testing.T) {
	var applied atomic.Int32
	s := newServer(t, func(srv *apiserver.Server, _ *fakeClock) {
		srv.NetworkChanged = func(context.Context) error { applied.Add(1); return nil }
	})
	admin := s.admin()

	r := s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "deny", CIDR: "192.0.2.7", Comment: "scanner"})
	if r.status != 201 {
		t.Fatalf("add: %d %s", r.status, r.body)
	}
	var rule api.NetworkRule
	r.decode(t, &rule)
	if rule.CIDR != "192.0.2.7/32" || rule.Listener != "all" || rule.Effect != "deny" || rule.CreatedBy != "boss" || rule.Comment != "scanner" {
		t.Errorf("added %+v; want deny 192.0.2.7/32 on all by boss", rule)
	}
	if applied.Load() != 1 {
		t.Errorf("NetworkChanged ran %d times after an add; want 1", applied.Load())
	}
	r = s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "allow", CIDR: "10.9.8.7/8", Listener: "SSH"})
	if r.status != 201 {
		t.Fatalf("add allow: %d %s", r.status, r.body)
	}
	var allow api.NetworkRule
	r.decode(t, &allow)
	if allow.CIDR != "10.0.0.0/8" || allow.Listener != "ssh" {
		t.Errorf("added %+v; want 10.0.0.0/8 (masked) on ssh", allow)
	}

	wantError(t, s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "deny", CIDR: "192.0.2.7/32"}),
		409, api.CodeConflict, "already exists", "tunnel admin network ls")
	for _, bad := range []struct {
		in   api.NetworkRuleRequest
		frag string
	}{
		{api.NetworkRuleRequest{Effect: "block", CIDR: "192.0.2.0/24"}, "neither allow nor deny"},
		{api.NetworkRuleRequest{Effect: "deny", CIDR: "192.0.2.0/33"}, "neither a network"},
		{api.NetworkRuleRequest{Effect: "deny", CIDR: "example.com"}, "neither a network"},
		{api.NetworkRuleRequest{Effect: "deny", CIDR: "192.0.2.0/24", Listener: "smtp"}, "api, quic, ssh or all"},
		{api.NetworkRuleRequest{Effect: "deny", CIDR: "192.0.2.0/24", Comment: "two\nlines"}, "one line"},
	} {
		wantError(t, s.do(admin, "POST", api.PathAdminNetwork, bad.in), 400, api.CodeBadRequest, bad.frag)
	}

	// The test client connects from 127.0.0.1.
	wantError(t, s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "deny", CIDR: "127.0.0.0/8", Listener: "api"}),
		409, api.CodeConflict, "would refuse your own address 127.0.0.1 on the API", "--force")
	wantError(t, s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "allow", CIDR: "198.51.100.0/24"}),
		409, api.CodeConflict, "lock you out")
	// Rules of other listeners never lock the caller out of the API.
	if r := s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "deny", CIDR: "127.0.0.1", Listener: "quic"}); r.status != 201 {
		t.Errorf("a QUIC-only deny of the caller: %d %s", r.status, r.body)
	}
	// An allow-list with the caller's network, then one without: removing
	// the first would lock the caller out.
	r = s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "allow", CIDR: "127.0.0.0/8", Listener: "api"})
	if r.status != 201 {
		t.Fatalf("allow loopback: %d %s", r.status, r.body)
	}
	var lo api.NetworkRule
	r.decode(t, &lo)
	if r := s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "allow", CIDR: "198.51.100.0/24", Listener: "api"}); r.status != 201 {
		t.Fatalf("a second allow: %d %s", r.status, r.body)
	}
	wantError(t, s.do(admin, "DELETE", fmt.Sprintf("%s/%d", api.PathAdminNetwork, lo.ID), nil), 409, api.CodeConflict, "removing rule", "lock you out")
	if r := s.do(admin, "DELETE", fmt.Sprintf("%s/%d?force=true", api.PathAdminNetwork, lo.ID), nil); r.status != 204 {
		t.Errorf("forced removal: %d %s", r.status, r.body)
	}
	if r := s.do(admin, "POST", api.PathAdminNetwork, api.NetworkRuleRequest{Effect: "deny", CIDR: "127.0.0.1", Listener: "api", Force: true}); r.status != 201 {
		t.Errorf("a forced lockout rule: %d %s", r.status, r.body)
	}

	wantError(t, s.do(admin, "DELETE", api.PathAdminNetwork+"/999", nil), 404, api.CodeNotFound, "no network rule 999", "tunnel admin network ls")
	wantError(t, s.do(admin, "DELETE", api.PathAdminNetwork+"/x", nil), 400, api.CodeBadRequest, "not a rule id")

	var rules []api.NetworkRule
	s.do(admin, "GET", api.PathAdminNetwork, nil).decode(t, &rules)
	if len(rules) != 5 {
		t.Errorf("ls: %d rules; want 5: %+v", len(rules), rules)
	}

	// Every change is in the log, with the rule.
	evs, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var added, removed int
	for _, e := range evs {
		switch e.Type {
		case audit.NetworkRuleAdded:
			added++
			if e.Actor != "boss" || e.Details["cidr"] == "" || e.Details["listener"] == "" {
				t.Errorf("event %+v lacks its actor or rule", e)
			}
		case audit.NetworkRuleRemoved:
			removed++
		}
	}
	if added != 6 || removed != 1 {
		t.Errorf("%d added and %d removed events; want 6 and 1", added, removed)
	}
	if applied.Load() != 7 {
		t.Errorf("NetworkChanged ran %d times; want once per change (7)", applied.Load())
	}
	s.verifyAudit()

	// Not for non-admins.
	s.addRole("dev", []string{"ubuntu"}, false)
	s.addUser("dave", "dev")
	dave := s.client(s.issue(s.ca, "dave", time.Hour, true))
	if r := s.do(dave, "GET", api.PathAdminNetwork, nil); r.status != 403 {
		t.Errorf("a non-admin listed the rules: %d", r.status)
	}
}
