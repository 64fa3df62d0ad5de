package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// What an operator trips over when running agents (issue 7): a second
// agent on one data directory, an unreachable gateway, a typo in the
// config, and an agent locked then unlocked.

// runAgentOnce runs tunnel-agent with args until it exits (at most
// timeout) and returns its exit code and combined output.
func runAgentOnce(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("tunnel-agent"), args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("tunnel-agent %s did not exit within %s:\n%s", strings.Join(args, " "), timeout, out)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("tunnel-agent %s: %v", strings.Join(args, " "), err)
	return -1, ""
}

// startAgentAt runs tunnel-agent on dataDir against gateway (token may be
// empty), stopped when the test ends.
func (c *cluster) startAgentAt(name, dataDir, gateway, token, yaml string) *agentProc {
	c.t.Helper()
	return c.startAgentArgs(name, dataDir, gateway, token, yaml)
}

// startAgentArgs is startAgentAt with extra flags for tunnel-agent run.
func (c *cluster) startAgentArgs(name, dataDir, gateway, token, yaml string, extra ...string) *agentProc {
	t := c.t
	t.Helper()
	a := &agentProc{t: t, name: name, dataDir: dataDir, cfgFile: filepath.Join(t.TempDir(), "agent.yaml"), c: c}
	if err := os.WriteFile(a.cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--data-dir", dataDir, "--gateway", gateway, "--ca-pin", c.pin, "--config", a.cfgFile, "--log-level", "debug"}
	if token != "" {
		args = append(args, "--token", token)
	}
	args = append(args, extra...)
	a.cmd = exec.Command(bin("tunnel-agent"), args...)
	a.cmd.Env = cleanEnv()
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

// closedPort returns a loopback address where nothing listens, on TCP or
// UDP.
func closedPort(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free on both TCP and UDP")
	return ""
}

// TestAgentDataDirLocked: a second agent on a data directory is refused
// with a sentence naming the first, and the first keeps working (no
// "replaced by a newer connection" fight).
func TestAgentDataDirLocked(t *testing.T) {
	e := newSSHEnv(t)
	code, out := runAgentOnce(t, 30*time.Second, "run", "--data-dir", e.web.dataDir, "--gateway", e.c.addr,
		"--ca-pin", e.c.pin, "--config", e.web.cfgFile)
	want := fmt.Sprintf("tunnel-agent: another tunnel-agent (pid %d) is already running on %s: stop it first or use another --data-dir\n",
		e.web.cmd.Process.Pid, e.web.dataDir)
	if code != 1 || out != want {
		t.Errorf("second agent on the data dir: exit %d, output:\n%s\nwant exit 1 and:\n%s", code, out, want)
	}
	// The first one was not disturbed: still online, still serving.
	e.admin.waitOnline("web-1", true, 10*time.Second)
	if code, so, se := e.bob.exitCode("ssh", e.login+"@web-1", "echo", "still-here"); code != 0 || strings.TrimSpace(so) != "still-here" {
		t.Errorf("ssh to the first agent after the second was refused: exit %d, %q, %q", code, so, se)
	}
	for what, log := range map[string]string{"gateway": e.c.log.String(), "agent": e.web.log.String()} {
		if strings.Contains(log, "replaced by a newer connection") {
			t.Errorf("the %s log shows two agents fighting over one identity", what)
		}
	}
}

// TestAgentUnreachableGateway: an agent that cannot reach its gateway says
// what failed and what to check, and never that it is connected.
func TestAgentUnreachableGateway(t *testing.T) {
	c := startCluster(t)
	admin := c.adminUser()
	admin.login()
	dead := closedPort(t)
	dataDir := filepath.Join(t.TempDir(), "data")

	// Enrolment against an address where nothing listens.
	code, out := runAgentOnce(t, 60*time.Second, "run", "--data-dir", dataDir, "--gateway", dead, "--ca-pin", c.pin,
		"--token", admin.token("web-1"))
	if want := "cannot reach the gateway at " + dead + ": connection refused (is tunnel-gateway running there?)"; code != 1 || !strings.Contains(out, want) {
		t.Errorf("enrolment against %s: exit %d, output:\n%s\nwant exit 1 and %q", dead, code, out, want)
	}

	// Enrolled with the real gateway, then started against the dead
	// address: QUIC over UDP gets no answer.
	a := c.startAgentAt("web-1", dataDir, c.addr, admin.token("web-1"), "")
	waitFor(t, 30*time.Second, "the agent to connect", func() bool {
		return strings.Contains(a.log.String(), "connected to gateway "+c.addr)
	})
	a.stop()
	a = c.startAgentAt("web-1", dataDir, dead, "", "")
	_, port, _ := net.SplitHostPort(dead)
	want := "no answer from the gateway at " + dead + " over UDP within 10s, and nothing listens on TCP port " + port +
		" there either: check that tunnel-gateway is running on 127.0.0.1 and that --gateway " + dead + " is its address (UDP to " + dead + " may also be blocked by a firewall)"
	waitFor(t, 60*time.Second, "the agent to explain the failure", func() bool { return strings.Contains(a.log.String(), want) })
	log := a.log.String()
	for _, bad := range []string{"connected to gateway " + dead, "connected to the gateway", "tunnel-agent ready", "context deadline exceeded"} {
		if strings.Contains(log, bad) {
			t.Errorf("the agent's log says %q while the gateway is unreachable:\n%s", bad, log)
		}
	}
}

// TestAgentConfigTypo: a mistake in the agent's YAML is named by file, key
// path and line, with the valid keys; ports are checked before anything
// starts.
func TestAgentConfigTypo(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ name, yaml, want string }{
		{"typo", "# the app's database\nlisten:\n  - name: orders-db\n    adress: 127.0.0.1:5432\n    target: db-1/postgres\n",
			"unknown key adress in listen[0] (line 4): did you mean address? valid keys: name, address, target"},
		{"port", "listen:\n  - name: orders-db\n    address: 127.0.0.1:70000\n    target: db-1/postgres\n",
			`listen[0].address (line 3): port 70000 of "127.0.0.1:70000" is out of range: use 1 to 65535`},
	} {
		file := filepath.Join(dir, tt.name+".yaml")
		if err := os.WriteFile(file, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := runAgentOnce(t, 30*time.Second, "run", "--data-dir", filepath.Join(dir, "data"), "--gateway", "127.0.0.1:1",
			"--ca-pin", "sha256:"+strings.Repeat("0", 64), "--config", file)
		if want := "tunnel-agent: config " + file + ": " + tt.want + "\n"; code != 1 || out != want {
			t.Errorf("%s: exit %d, output:\n%s\nwant exit 1 and:\n%s", tt.name, code, out, want)
		}
	}
}

// TestAgentLockUnlock: agents lock ends the node's session and keeps its
// recording; the agent says once that it is locked and keeps trying;
// agents unlock brings it back by itself, and a session works again.
func TestAgentLockUnlock(t *testing.T) {
	e := newSSHEnv(t)
	wait := e.startRemote(t, e.bob)
	id := e.activeSession(t, "bob")
	e.admin.must("admin", "agents", "lock", "web-1")
	if code, out := wait(20 * time.Second); code == 0 || !strings.Contains(out, "access revoked") {
		t.Errorf("after agents lock: ssh exit %d, output %q; want it cut with the revocation message", code, out)
	}
	e.admin.waitOnline("web-1", false, 20*time.Second)
	const locked = "the gateway refuses this agent: locked by an administrator; retrying until it is unlocked"
	waitFor(t, 60*time.Second, "the agent's log to say it is locked", func() bool { return strings.Contains(e.web.log.String(), locked) })
	// It keeps trying (each retry is a debug line, not a warning).
	waitFor(t, 90*time.Second, "the agent to retry while locked", func() bool {
		return strings.Count(e.web.log.String(), "still cannot connect to the gateway; retrying") >= 2
	})

	// The recording of the session the lock killed reached the gateway.
	waitFor(t, 60*time.Second, "the recording of the killed session", func() bool {
		var list []struct {
			ID        string `json:"id"`
			Recording bool   `json:"recording"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "sessions", "ls", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.ID == id && s.Recording {
				return true
			}
		}
		return false
	})
	if raw := e.admin.must("admin", "sessions", "play", id, "--raw"); !strings.Contains(raw, "started-remote") {
		t.Errorf("the recording of the killed session lacks its output:\n%.2000s", raw)
	}

	// Still locked: nothing reaches the node.
	if code, _, _ := e.bob.exitCode("ssh", e.login+"@web-1", "true"); code == 0 {
		t.Error("ssh to a locked node worked")
	}

	e.admin.must("admin", "agents", "unlock", "web-1")
	e.admin.waitOnline("web-1", true, 90*time.Second)
	var code int
	var so, se string
	waitFor(t, 30*time.Second, "an SSH session to web-1 after the unlock", func() bool {
		code, so, se = e.bob.exitCode("ssh", e.login+"@web-1", "echo", "back-again")
		return code == 0
	})
	if strings.TrimSpace(so) != "back-again" {
		t.Errorf("ssh after unlock: exit %d, %q, %q", code, so, se)
	}
	log := e.web.log.String()
	if n := strings.Count(log, `level=WARN msg="`+locked+`"`); n != 1 {
		t.Errorf("the agent logged its locked state %d times; want once (not at every retry):\n%s", n, log)
	}
	if n := strings.Count(log, "connected to gateway "+e.c.addr); n < 2 {
		t.Errorf("the agent said connected %d times; want at start and after the unlock:\n%s", n, log)
	}
	if audit := e.admin.must("admin", "audit", "ls"); !strings.Contains(audit, "recording.saved") {
		t.Error("the audit log lacks the recording's upload")
	}
}
