package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
)

// startAgentEnv is startAgent with extra environment variables for the
// agent process (startAgent's agent inherits the test's environment).
func (c *cluster) startAgentEnv(name, token string, env ...string) *agentProc {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{t: t, name: name, dataDir: filepath.Join(dir, "data"), cfgFile: filepath.Join(dir, "agent.yaml"), c: c}
	if err := os.WriteFile(a.cfgFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(bin("tunnel-agent"), "run", "--data-dir", a.dataDir, "--gateway", c.addr, "--ca-pin", c.pin,
		"--config", a.cfgFile, "--log-level", "debug", "--token", token)
	a.cmd.Env = append(cleanEnv(), env...)
	a.log = &syncBuffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", name, err)
	}
	a.done = make(chan struct{})
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", name, a.log.String())
		}
	})
	return a
}

// dropIns returns the sudoers drop-ins in dir, by name.
func dropIns(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // the agent's temporary file, renamed into place
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// TestSessionSudo: a role with --sudo gives the session's login sudo on
// the node for the session only, end to end: the gateway puts "sudo" in
// the SSH stream's permit, the agent (its sudoers directory pointed at a
// temp dir with TUNNEL_SUDOERS_DIR) writes a drop-in for the login that
// visudo accepts while the session lives, and removes it when the session
// ends; session.created records sudo. Without --sudo no drop-in appears.
//
// Real sudo is not run: the drop-in is in a temp dir sudo does not read,
// and the tests run as root, for whom sudo proves nothing; visudo -cf
// checks the file is what sudo would accept.
func TestSessionSudo(t *testing.T) {
	visudo, err := exec.LookPath("visudo")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("visudo is not installed")
		}
		t.Skip("visudo is not installed")
	}
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	osUser := testenv.CurrentUser(t)
	admin.must("admin", "roles", "add", "ops", "--login", osUser, "--node", "web-*", "--sudo")
	bob := addUser(t, admin, "bob", "ops")
	bob.login()
	dir := t.TempDir()
	c.startAgentEnv("web-1", admin.token("web-1"), "TUNNEL_SUDOERS_DIR="+dir)
	admin.waitOnline("web-1", true, 20*time.Second)

	wait, output := bob.backgroundOut("ssh", osUser+"@web-1", "echo started-remote; sleep 15")
	waitFor(t, 20*time.Second, "the remote command to start", func() bool { return strings.Contains(output(), "started-remote") })
	var sessions []api.Session
	if err := json.Unmarshal([]byte(admin.must("admin", "sessions", "ls", "--json")), &sessions); err != nil {
		t.Fatal(err)
	}
	var id string
	for _, s := range sessions {
		if s.User == "bob" && s.Node == "web-1" && s.EndedAt == nil {
			id = s.ID
		}
	}
	if id == "" {
		t.Fatalf("no live session of bob on web-1 in %+v", sessions)
	}
	files := dropIns(t, dir)
	if len(files) != 1 {
		t.Fatalf("sudoers drop-ins while the session lives: %v; want one", files)
	}
	for name, content := range files {
		if !strings.HasPrefix(name, "tunnel-") {
			t.Errorf("drop-in %s; want a name starting with tunnel-", name)
		}
		if !strings.Contains(content, "# tunnel session "+id) || !strings.Contains(content, "\n"+osUser+" ALL=(ALL:ALL) NOPASSWD: ALL\n") {
			t.Errorf("drop-in %s:\n%s\nwant the session %s and sudo for %s", name, content, id, osUser)
		}
		if out, err := exec.Command(visudo, "-cf", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Errorf("visudo -cf %s: %v\n%s", name, err, out)
		}
	}
	if code, out := wait(60 * time.Second); code != 0 {
		t.Fatalf("bob's ssh: exit %d, %q", code, out)
	}
	waitFor(t, 20*time.Second, "the drop-in to be removed at the end of the session", func() bool { return len(dropIns(t, dir)) == 0 })

	// session.created says sudo was given.
	var evs []struct {
		Type    string            `json:"type"`
		Subject string            `json:"subject"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		if ev.Type == "session.created" && ev.Subject == id {
			found = true
			if ev.Details["sudo"] != "true" {
				t.Errorf("session.created of %s: details %v; want sudo true", id, ev.Details)
			}
		}
	}
	if !found {
		t.Errorf("no session.created event for %s", id)
	}

	// Without --sudo: no drop-in.
	admin.must("admin", "roles", "update", "ops", "--sudo=false")
	if code, so, se := bob.exitCode("ssh", osUser+"@web-1", "ls -A "+dir); code != 0 || strings.Contains(so, "tunnel-") {
		t.Errorf("ssh after --sudo=false: exit %d, listing of the sudoers dir %q (stderr %q); want no drop-in", code, so, se)
	}
}
