package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// TestGatewaysLs: the command asks GET /v1/admin/gateways and prints each
// gateway's id, liveness and addresses; --json prints the list as is.
func TestGatewaysLs(t *testing.T) {
	beat := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	list := api.GatewayList{Gateways: []api.Gateway{
		{ID: "gw-1", APIAddr: "10.0.0.1:8443", QUICAddr: "10.0.0.1:8443", Version: "1.2", LastHeartbeat: beat, Alive: true},
		{ID: "gw-2", APIAddr: "10.0.0.2:8443", QUICAddr: "10.0.0.2:8443", SSHAddr: "10.0.0.2:2222", Version: "1.2", LastHeartbeat: beat},
	}}
	g := newAdminTestGateway(t, func(adminRequest) (int, any) { return 200, list })
	out, err := g.run("admin", "gateways", "ls")
	if err != nil {
		t.Fatalf("gateways ls: %v\n%s", err, out)
	}
	reqs := g.requests()
	if len(reqs) != 1 || reqs[0].Method != "GET" || reqs[0].Path != api.PathAdminGateways {
		t.Fatalf("requests = %+v; want one GET %s", reqs, api.PathAdminGateways)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("output has %d lines, want a header and 2:\n%s", len(lines), out)
	}
	if f := strings.Fields(lines[1]); len(f) < 6 || f[0] != "gw-1" || f[1] != "yes" || f[2] != "10.0.0.1:8443" || f[4] != "-" {
		t.Errorf("gw-1 line = %q", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) < 6 || f[0] != "gw-2" || f[1] != "no" || f[4] != "10.0.0.2:2222" {
		t.Errorf("gw-2 line = %q", lines[2])
	}

	out, err = g.run("admin", "gateways", "ls", "--json")
	if err != nil {
		t.Fatalf("gateways ls --json: %v\n%s", err, out)
	}
	var got []api.Gateway
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 2 || got[0].ID != "gw-1" || !got[0].Alive || got[1].Alive {
		t.Errorf("--json printed %q (%v)", out, err)
	}
}
