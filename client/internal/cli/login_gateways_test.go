package cli

import (
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/client/profile"
)

// A list of gateways is checked before anything is asked or sent.
func TestLoginGatewayListChecked(t *testing.T) {
	_, err := run(t, "login", "--gateway", "a.example.com:8443,b.example.com", "--ca-pin", "sha256:00", "--user", "alice")
	if err == nil || !strings.Contains(err.Error(), `--gateway: gateway address "b.example.com" must be HOST:PORT`) {
		t.Errorf("login with a bad address in the list: %v", err)
	}
}

func TestProfileGateways(t *testing.T) {
	p := profile.Profile{Gateway: "a:1, b:2,"}
	if got := strings.Join(p.Gateways(), "|"); got != "a:1|b:2" || p.FirstGateway() != "a:1" {
		t.Errorf("Gateways = %q, FirstGateway = %q; want a:1|b:2 and a:1", got, p.FirstGateway())
	}
	if (profile.Profile{}).FirstGateway() != "" {
		t.Error("an empty profile has a first gateway")
	}
}
