package cli

import (
	"os"
	"path/filepath"
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

// A code that cannot be one is refused before anything is sent (the
// gateway would count a failed login): the gateway here does not exist.
func TestLoginRefusesAMalformedCodeBeforeSending(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("a long enough password"), 0o600); err != nil {
		t.Fatal(err)
	}
	pin := "sha256:" + strings.Repeat("ab", 32)
	for _, code := range []string{"abc", "12345", "1234567", "12345a"} {
		_, err := runIn(t, t.TempDir(), nil, "login", "--gateway", "127.0.0.1:1", "--ca-pin", pin, "--user", "alice", "--password-file", pw, "--otp", code)
		if err == nil || !strings.Contains(err.Error(), "the TOTP code is the 6 digits your authenticator app shows for alice") {
			t.Errorf("login --otp %q: %v; want the code refused before sending", code, err)
		}
	}
}

// A --gateway list that shares a gateway with the profile's keeps its user
// and pin; one that shares none needs a pin, and says why.
func TestLoginKeepsTheProfileForAnotherListOfTheSameCluster(t *testing.T) {
	home := t.TempDir()
	prev := &profile.Profile{Gateway: "127.0.0.1:1,127.0.0.1:2", CAPin: "sha256:" + strings.Repeat("cd", 32), User: "alice"}
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("a long enough password"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The malformed code stops login right after the profile is settled.
	_, err := runIn(t, home, prev, "login", "--gateway", "127.0.0.1:2,127.0.0.1:3", "--password-file", pw, "--otp", "x")
	if err == nil || !strings.Contains(err.Error(), "for alice") {
		t.Errorf("login with a list sharing a gateway: %v; want the user and pin kept (then the code refused)", err)
	}
	_, err = runIn(t, home, nil, "login", "--gateway", "127.0.0.1:4", "--password-file", pw, "--otp", "x")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:4 shares no gateway with the one this profile logged in to (127.0.0.1:1,127.0.0.1:2): give its cluster's --ca-pin") {
		t.Errorf("login with another cluster's gateway: %v; want a pin asked for, saying why", err)
	}
}

// A negative --ttl is refused before anything is sent.
func TestNegativeTTLRefused(t *testing.T) {
	for _, args := range [][]string{
		{"login", "--gateway", "127.0.0.1:1", "--ca-pin", "sha256:" + strings.Repeat("ab", 32), "--user", "alice", "--ttl", "-5m"},
		{"ssh", "--ttl", "-5m", "ubuntu@web-1", "true"},
		{"scp", "--ttl", "-5m", "a", "ubuntu@web-1:/tmp/"},
	} {
		_, err := runIn(t, t.TempDir(), &testProfile, args...)
		if err == nil || !strings.Contains(err.Error(), "--ttl -5m0s is negative: give a length such as 8h (0: the default, 1h)") {
			t.Errorf("%s: %v; want the negative --ttl refused", strings.Join(args, " "), err)
		}
	}
}
