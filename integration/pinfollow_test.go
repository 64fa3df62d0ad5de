package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPinsFollowTwoRotations rotates the X.509 CA twice. After the second
// rotation the CA that init printed the pin of is in no chain the gateway
// sends, so agents and clients that kept that pin would be locked out;
// instead each moves its pin to the new CA at activate (agents over their
// live connection, the CLI at its next login). Agents restarted with the
// init --ca-pin on their command line (as a unit file keeps it) still
// start and connect, a profile logs in without --ca-pin, and the init pin
// given explicitly is refused with the pin sentence.
func TestPinsFollowTwoRotations(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for agent renewals (about a minute per rotation)")
	}
	c := startCluster(t, "--agent-ttl", "1m", "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	db := c.startAgent("db-1", admin.token("db-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := c.startAgent("app-1", admin.token("app-1"), "listen:\n  - {name: echo, address: "+addr+", target: db-1/echo}\n")
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	dialRetry(t, addr, echoOnce, 60*time.Second)
	agents := []*agentProc{db, app}
	// A login from the profile: its gateway and pin, no --ca-pin.
	relogin := func() (string, string, error) {
		return admin.run("login", "--user", admin.name, "--password-file", admin.pwPath, "--otp", admin.otp.next(t))
	}

	for round := 1; round <= 2; round++ {
		admin.must("admin", "ca", "rotate", "start", "--kind", "x509")
		renewed := map[string]int{}
		for _, a := range agents {
			renewed[a.name] = strings.Count(a.log.String(), "certificate renewed")
		}
		admin.must("admin", "ca", "rotate", "activate", "--kind", "x509", "--force")
		for _, a := range agents {
			waitFor(t, 90*time.Second, fmt.Sprintf("%s to follow the new CA's pin (rotation %d)", a.name, round), func() bool {
				return strings.Count(a.log.String(), "now authenticates gateways with its pin") >= round
			})
			// A certificate of the new CA before the old one is removed.
			waitFor(t, 120*time.Second, fmt.Sprintf("%s to renew after activate (rotation %d)", a.name, round), func() bool {
				return strings.Count(a.log.String(), "certificate renewed") > renewed[a.name]
			})
		}
		if _, stderr, err := relogin(); err != nil || !strings.Contains(stderr, "this profile now pins") {
			t.Fatalf("login after activate (rotation %d): %v\n%s\nwant the profile's pin moved", round, err, stderr)
		}
		admin.must("admin", "ca", "rotate", "finish", "--kind", "x509", "--force")
		dialRetry(t, addr, echoOnce, 60*time.Second)
	}

	// The init pin's CA is gone from every chain: agents restarted with
	// it on their command line use the pin they followed.
	for _, a := range agents {
		_ = a.stop()
		a.start("")
	}
	dialRetry(t, addr, echoOnce, 60*time.Second)
	for _, a := range agents {
		if !strings.Contains(a.log.String(), "--ca-pin is the pin this agent enrolled with") {
			t.Errorf("agent %s restarted with its enrolment pin did not say it uses the current one:\n%s", a.name, a.log.String())
		}
	}
	if _, stderr, err := relogin(); err != nil {
		t.Fatalf("login from the profile after two rotations: %v\n%s", err, stderr)
	}
	admin.must("ls")
	_, stderr, err := admin.run("login", "--ca-pin", c.pin, "--user", admin.name, "--password-file", admin.pwPath, "--otp", admin.otp.next(t))
	if err == nil || !strings.Contains(stderr, "ca-pin") {
		t.Errorf("login with the init pin after two rotations: %v\n%s\nwant a refusal naming the pin", err, stderr)
	}
}
