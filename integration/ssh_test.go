package integration

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// sshEnv is a gateway, one node (web-1) and an engineer whose role grants
// the current OS user as login on every node.
type sshEnv struct {
	c     *cluster
	admin *user
	bob   *user
	web   *agentProc
	login string
}

func newSSHEnv(t *testing.T) *sshEnv {
	t.Helper()
	return newSSHEnvWith(t)
}

// newSSHEnvWith passes extra flags to tunnel-gateway run.
func newSSHEnvWith(t *testing.T, gatewayFlags ...string) *sshEnv {
	t.Helper()
	e := &sshEnv{login: testenv.CurrentUser(t)}
	e.c = startCluster(t, append([]string{"--login-burst", "1000"}, gatewayFlags...)...)
	e.admin = e.c.adminUser()
	e.admin.login()
	e.admin.must("admin", "roles", "add", "ops", "--login", e.login, "--node", "web-*", "--service", "web-1/echo", "--max-ttl", "2h")
	e.bob = addUser(t, e.admin, "bob", "ops")
	e.bob.login()
	echo := serve(t, echoHandler)
	e.web = e.c.startAgent("web-1", e.admin.token("web-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	e.admin.waitOnline("web-1", true, 20*time.Second)
	return e
}

// exitCode runs the CLI as u and returns its exit code, stdout and stderr.
func (u *user) exitCode(args ...string) (int, string, string) {
	so, se, err := u.run(args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, so, se
	case errors.As(err, &ee):
		return ee.ExitCode(), so, se
	}
	u.c.t.Fatalf("tunnel %s: %v", strings.Join(args, " "), err)
	return -1, "", ""
}

func TestSSHSession(t *testing.T) {
	e := newSSHEnv(t)

	// A command runs and its exit status is tunnel's own.
	code, out, errOut := e.bob.exitCode("ssh", e.login+"@web-1", "echo", "hello-from-web-1")
	if code != 0 || strings.TrimSpace(out) != "hello-from-web-1" {
		t.Fatalf("tunnel ssh echo: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, se := e.bob.exitCode("ssh", e.login+"@web-1", "sh", "-c", "'exit 7'"); code != 7 {
		t.Errorf("tunnel ssh 'exit 7' exited %d; want 7 (stderr %q)", code, se)
	}

	// A login the role does not grant, and a node it does not cover.
	if code, _, se := e.bob.exitCode("ssh", "nobody-else@web-1", "true"); code == 0 || !strings.Contains(se, "do not allow login") {
		t.Errorf("ssh with a login not granted: exit %d, %q", code, se)
	}
	if code, _, se := e.bob.exitCode("ssh", e.login+"@db-1", "true"); code == 0 {
		t.Errorf("ssh to a node no role covers: exit %d, %q; want a refusal", code, se)
	}

	// The sessions are listed and, once the gateway saw their streams
	// end, closed.
	var ls string
	waitFor(t, 10*time.Second, "bob's sessions to show as closed", func() bool {
		ls = e.admin.must("admin", "sessions", "ls")
		return strings.Contains(ls, "bob") && strings.Contains(ls, e.login+"@web-1") &&
			strings.Count(ls, "closed") >= 2 && !strings.Contains(ls, "active")
	})

	// A node that is offline: the refusal says so, and the session made
	// for it ends then (the gateway ends it before it answers), instead of
	// staying active until its deadline.
	e.web.stop()
	e.admin.waitOnline("web-1", false, 40*time.Second)
	if code, _, se := e.bob.exitCode("ssh", e.login+"@web-1", "true"); code == 0 || !strings.Contains(se, "node web-1 is offline") {
		t.Errorf("tunnel ssh to an offline node: exit %d, %q; want a refusal saying web-1 is offline", code, se)
	}
	if ls := e.admin.must("admin", "sessions", "ls", "--active"); strings.Contains(ls, "bob") {
		t.Errorf("the session made for an offline node is still active:\n%s", ls)
	}
	if ls := e.admin.must("admin", "sessions", "ls"); !strings.Contains(ls, "offline") {
		t.Errorf("sessions ls does not say why the last session ended:\n%s", ls)
	}
}

func TestSSHSessionDeadline(t *testing.T) {
	e := newSSHEnv(t)
	start := time.Now()
	code, _, se := e.bob.exitCode("ssh", "--ttl", "3s", e.login+"@web-1", "sleep", "30")
	if code == 0 || !strings.Contains(se, "session expired") {
		t.Errorf("a 3 s session running sleep 30: exit %d, stderr %q; want it cut with 'session expired'", code, se)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the session ran %s; want it cut at its 3 s deadline", d)
	}
}

// background runs the CLI as u in the background; wait returns its exit
// code and output.
func (u *user) background(args ...string) (wait func(time.Duration) (int, string)) {
	wait, _ = u.backgroundOut(args...)
	return wait
}

// backgroundOut is background that also returns the output so far.
func (u *user) backgroundOut(args ...string) (wait func(time.Duration) (int, string), output func() string) {
	u.c.t.Helper()
	cmd := exec.Command(bin("tunnel"), args...)
	cmd.Env = append(cleanEnv(), "TUNNEL_HOME="+u.home)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		u.c.t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			done <- 0
		case errors.As(err, &ee):
			done <- ee.ExitCode()
		default:
			done <- -1
		}
	}()
	u.c.t.Cleanup(func() { cmd.Process.Kill() })
	return func(d time.Duration) (int, string) {
		select {
		case code := <-done:
			done <- code
			return code, out.String()
		case <-time.After(d):
			return -2, out.String()
		}
	}, out.String
}

// startRemote runs `tunnel ssh LOGIN@web-1 'echo started; sleep 60'` as u
// in the background and waits until the remote command runs, so that what
// follows hits a live session, not one still connecting.
func (e *sshEnv) startRemote(t *testing.T, u *user) func(time.Duration) (int, string) {
	t.Helper()
	wait, out := u.backgroundOut("ssh", e.login+"@web-1", "echo started-remote; sleep 60")
	waitFor(t, 20*time.Second, "the remote command to start", func() bool { return strings.Contains(out(), "started-remote") })
	return wait
}

// activeSession waits for one active session of user and returns its id.
func (e *sshEnv) activeSession(t *testing.T, user string) string {
	t.Helper()
	var id string
	waitFor(t, 15*time.Second, "an active session of "+user, func() bool {
		var list []struct {
			ID   string `json:"id"`
			User string `json:"user"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "sessions", "ls", "--active", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.User == user {
				id = s.ID
				return true
			}
		}
		return false
	})
	return id
}

// TestRevocation: an admin's revocation closes live SSH sessions and
// tunnel streams at once, tells the user why, and the old certificate no
// longer connects.
func TestRevocation(t *testing.T) {
	e := newSSHEnv(t)

	// sessions revoke ends one live SSH session.
	wait := e.startRemote(t, e.bob)
	id := e.activeSession(t, "bob")
	e.admin.must("admin", "sessions", "revoke", id)
	code, out := wait(10 * time.Second)
	if code == 0 || code == -2 || !strings.Contains(out, "access revoked by an administrator") {
		t.Errorf("after sessions revoke: exit %d, output %q; want the session cut with 'access revoked by an administrator'", code, out)
	}

	// users lock ends bob's SSH session and his database stream together.
	wait = e.startRemote(t, e.bob)
	port := freeLoopbackPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	e.bob.background("proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
	dialRetry(t, addr, echoOnce, 10*time.Second)
	stream, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if err := echoOnce(stream); err != nil {
		t.Fatalf("stream before the lock: %v", err)
	}
	e.admin.must("admin", "users", "lock", "bob")
	code, out = wait(10 * time.Second)
	if code == 0 || code == -2 || !strings.Contains(out, "access revoked by an administrator") {
		t.Errorf("after users lock: ssh exit %d, output %q; want it cut with the revocation message", code, out)
	}
	// The stream is cut: a write or a read fails (a reset may be reported
	// by either), and nothing is echoed any more.
	_ = stream.SetDeadline(time.Now().Add(5 * time.Second))
	_, werr := stream.Write([]byte("after\n"))
	got, rerr := io.ReadAll(stream)
	if len(got) > 0 || werr == nil && rerr == nil {
		t.Errorf("the database stream still works after users lock: write %v, read %q, %v", werr, got, rerr)
	}
	// The old certificate no longer connects.
	if code, _, se := e.bob.exitCode("ssh", e.login+"@web-1", "true"); code == 0 {
		t.Errorf("ssh with a locked user's certificate: exit 0; want a refusal (%q)", se)
	}
	if code, _, _ := e.bob.exitCode("ls"); code == 0 {
		t.Error("tunnel ls with a locked user's certificate worked")
	}
	audit := e.admin.must("admin", "audit", "ls")
	for _, want := range []string{"session.revoked", "cert.revoked", "user.locked"} {
		if !strings.Contains(audit, want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
}

// TestAgentLock: locking an agent ends the sessions on its node and its
// connection; it cannot come back until unlocked.
func TestAgentLock(t *testing.T) {
	e := newSSHEnv(t)
	wait := e.startRemote(t, e.bob)
	e.admin.must("admin", "agents", "lock", "web-1")
	code, out := wait(10 * time.Second)
	if code == 0 || code == -2 || !strings.Contains(out, "access revoked") {
		t.Errorf("after agents lock: ssh exit %d, output %q", code, out)
	}
	e.admin.waitOnline("web-1", false, 10*time.Second)
	waitFor(t, 20*time.Second, "the agent's log to say it is locked", func() bool {
		return strings.Contains(e.web.log.String(), "locked by an administrator") || strings.Contains(e.web.log.String(), "revoked")
	})
	if code, _, _ := e.bob.exitCode("ssh", e.login+"@web-1", "true"); code == 0 {
		t.Error("ssh to a locked node worked")
	}
}

// TestSCP copies a file both ways with tunnel scp.
func TestSCP(t *testing.T) {
	e := newSSHEnv(t)
	dir := t.TempDir()
	src := dir + "/up.bin"
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o640); err != nil {
		t.Fatal(err)
	}
	remote := dir + "/remote.bin" // web-1 is this machine
	if code, so, se := e.bob.exitCode("scp", src, e.login+"@web-1:"+remote); code != 0 {
		t.Fatalf("tunnel scp upload: exit %d\n%s%s", code, so, se)
	}
	back := dir + "/back.bin"
	if code, so, se := e.bob.exitCode("scp", e.login+"@web-1:"+remote, back); code != 0 {
		t.Fatalf("tunnel scp download: exit %d\n%s%s", code, so, se)
	}
	got, err := os.ReadFile(back)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Errorf("the file changed on the round trip (%v)", err)
	}
	if code, _, se := e.bob.exitCode("scp", e.login+"@web-1:"+dir+"/does-not-exist", back+".x"); code == 0 || !strings.Contains(se, "does not exist") {
		t.Errorf("copying a missing remote file: exit %d, %q; want a clear error", code, se)
	}
}
