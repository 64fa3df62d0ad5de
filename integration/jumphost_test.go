package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// jhEnv is sshEnv with the jump host on, and the ssh_config block from
// bob's tunnel config ssh, as the README says to install it.
type jhEnv struct {
	*sshEnv
	host, port string // the jump host
	cfg        string // the block, plus test-only settings
}

func newJHEnv(t *testing.T) *jhEnv {
	t.Helper()
	for _, tool := range []string{"ssh", "scp"} {
		testenv.LookPath(t, tool)
	}
	e := &jhEnv{sshEnv: newSSHEnvWith(t, "--ssh-addr", "127.0.0.1:0")}
	var ok bool
	e.host, e.port, ok = strings.Cut(e.c.sshAddr, ":")
	if !ok {
		t.Fatalf("jump host address %q", e.c.sshAddr)
	}
	block := e.bob.must("config", "ssh", "--ssh-port", e.port)
	e.cfg = filepath.Join(t.TempDir(), "ssh_config")
	// What follows the block applies to every host: no agent, no prompt, no
	// system-wide known hosts, so that only the block decides.
	extra := "Host *\n    BatchMode yes\n    IdentityAgent none\n    GlobalKnownHostsFile /dev/null\n    ConnectTimeout 10\n"
	if err := os.WriteFile(e.cfg, []byte(block+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// jhRun runs an OpenSSH tool and returns its exit code and output.
func jhRun(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%s %v: %v", name, args, err)
	return -1, ""
}

// jump is the README's -J argument: USER@GATEWAY:PORT.
func (e *jhEnv) jump() string { return "bob@" + e.host + ":" + e.port }

// jhResolve is ssh -G: the options OpenSSH would use, first value of each.
func jhResolve(t *testing.T, cfg string, args ...string) map[string]string {
	t.Helper()
	code, out := jhRun(t, "ssh", append([]string{"-G", "-F", cfg}, args...)...)
	if code != 0 {
		t.Fatalf("ssh -G %v: exit %d\n%s", args, code, out)
	}
	opts := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, " ")
		if _, dup := opts[k]; !dup {
			opts[k] = v
		}
	}
	return opts
}

// TestJumpHostREADMEForms runs the README's commands with the block from
// tunnel config ssh: ssh -J USER@GATEWAY:PORT LOGIN@NODE (bare node name),
// scp -J the same way, ssh LOGIN@NODE.CLUSTER; and plain ssh to the
// gateway's host on port 22 is resolved as without the block.
func TestJumpHostREADMEForms(t *testing.T) {
	e := newJHEnv(t)

	code, out := jhRun(t, "ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@web-1", "echo via-readme")
	if code != 0 || !strings.Contains(out, "via-readme") {
		t.Fatalf("ssh -J %s %s@web-1: exit %d\n%s", e.jump(), e.login, code, out)
	}
	dir := t.TempDir()
	src, remote := filepath.Join(dir, "src.txt"), filepath.Join(dir, "remote.txt") // web-1 is this machine
	if err := os.WriteFile(src, []byte("copied through the jump host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := jhRun(t, "scp", "-F", e.cfg, "-J", e.jump(), src, e.login+"@web-1:"+remote); code != 0 {
		t.Errorf("scp -J: exit %d\n%s", code, out)
	} else if got, _ := os.ReadFile(remote); string(got) != "copied through the jump host\n" {
		t.Errorf("scp -J copied %q", got)
	}
	code, out = jhRun(t, "ssh", "-F", e.cfg, e.login+"@web-1."+e.c.name, "echo via-suffix")
	if code != 0 || !strings.Contains(out, "via-suffix") {
		t.Errorf("ssh %s@web-1.%s: exit %d\n%s", e.login, e.c.name, code, out)
	}

	// The machine's own sshd on port 22 is not captured by the block.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"admin@" + e.host}, {"-p", "22", "admin@" + e.host}} {
		got, want := jhResolve(t, e.cfg, args...), jhResolve(t, empty, args...)
		for _, k := range []string{"certificatefile", "identityfile", "identitiesonly", "userknownhostsfile", "stricthostkeychecking", "proxyjump"} {
			if got[k] != want[k] {
				t.Errorf("ssh -G %v: %s is %q; want %q as without the block", args, k, got[k], want[k])
			}
		}
	}
	if jh := jhResolve(t, e.cfg, "-p", e.port, "bob@"+e.host); jh["stricthostkeychecking"] != "true" ||
		strings.Trim(jh["userknownhostsfile"], `"`) != filepath.Join(e.bob.home, "known_hosts") {
		t.Errorf("ssh -G to the jump port: stricthostkeychecking %q userknownhostsfile %q; want the block's", jh["stricthostkeychecking"], jh["userknownhostsfile"])
	}
}

// TestJumpHostControlMasterLock: a connection held open by an OpenSSH
// ControlMaster is closed by users lock; a new session over the socket is
// refused, also after users unlock (the certificate stays revoked).
func TestJumpHostControlMasterLock(t *testing.T) {
	e := newJHEnv(t)
	sock := filepath.Join(t.TempDir(), "m")
	master := exec.Command("ssh", "-F", e.cfg, "-M", "-S", sock, "-o", "ControlPersist=no", "-N", "-p", e.port, "bob@"+e.host)
	masterOut := &syncBuffer{}
	master.Stdout, master.Stderr = masterOut, masterOut
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	masterDone := make(chan error, 1)
	go func() { masterDone <- master.Wait() }()
	t.Cleanup(func() {
		_ = master.Process.Kill()
		<-masterDone
	})
	waitFor(t, 20*time.Second, "the ControlMaster to hold the connection", func() bool {
		code, _ := jhRun(t, "ssh", "-F", e.cfg, "-S", sock, "-O", "check", "-p", e.port, "bob@"+e.host)
		return code == 0
	})
	// A session to web-1 whose jump goes over the master's connection.
	overMaster := func() (int, string) {
		proxy := fmt.Sprintf("ssh -F %s -S %s -p %s -W %%h:%%p bob@%s", e.cfg, sock, e.port, e.host)
		return jhRun(t, "ssh", "-F", e.cfg, "-o", "ProxyCommand="+proxy, e.login+"@web-1", "echo over-master")
	}
	if code, out := overMaster(); code != 0 || !strings.Contains(out, "over-master") {
		t.Fatalf("a session over the master before the lock: exit %d\n%s", code, out)
	}

	e.admin.must("admin", "users", "lock", "bob")
	select {
	case <-masterDone:
		masterDone <- nil // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatalf("the ControlMaster's connection is still open after users lock\n%s", masterOut.String())
	}
	const revoked = "your certificate was revoked by an administrator"
	if code, out := overMaster(); code == 0 || !strings.Contains(out, revoked) {
		t.Errorf("a session over the socket after users lock: exit %d; want it refused with %q\n%s", code, revoked, out)
	}
	e.admin.must("admin", "users", "unlock", "bob")
	if code, out := overMaster(); code == 0 || !strings.Contains(out, revoked) {
		t.Errorf("a session over the socket after users unlock: exit %d; want it still refused with %q\n%s", code, revoked, out)
	}
	// A new login is bob's way back.
	e.bob.login()
	if code, out := jhRun(t, "ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@web-1", "echo back"); code != 0 || !strings.Contains(out, "back") {
		t.Errorf("after unlock and a new login: exit %d\n%s", code, out)
	}
}

// TestJumpHostSessionRevoke: sessions revoke ends a jump session with the
// reason and revokes the certificate it was opened with, so that the jump
// host refuses it from then on.
func TestJumpHostSessionRevoke(t *testing.T) {
	e := newJHEnv(t)
	cmd := exec.Command("ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@web-1", "echo started-jump; sleep 60")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	waitFor(t, 30*time.Second, "the remote command to start", func() bool { return strings.Contains(out.String(), "started-jump") })
	id := e.activeSession(t, "bob")
	e.admin.must("admin", "sessions", "revoke", id)
	select {
	case err := <-done:
		done <- err
		if err == nil || !strings.Contains(out.String(), "access revoked by an administrator") {
			t.Errorf("after sessions revoke: %v; want the session cut with the reason\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the jump session is still running after sessions revoke\n%s", out.String())
	}
	code, o := jhRun(t, "ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@web-1", "true")
	if code == 0 || !strings.Contains(o, "your certificate was revoked by an administrator") {
		t.Errorf("ssh -J with the certificate of a revoked session: exit %d; want the jump host to refuse it as revoked\n%s", code, o)
	}
}

// TestSessionsEndWithTheLogin: a session never outlives the login it was
// granted from, through the jump host or tunnel ssh.
func TestSessionsEndWithTheLogin(t *testing.T) {
	e := newJHEnv(t)
	e.bob.login("--ttl", "30m")
	sshExpiry := jhSSHCertExpiry(t, filepath.Join(e.bob.home, "key-cert.pub"))
	tlsExpiry := jhTLSCertExpiry(t, filepath.Join(e.bob.home, "tls.crt"))

	if code, out := jhRun(t, "ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@web-1", "true"); code != 0 {
		t.Fatalf("ssh -J: exit %d\n%s", code, out)
	}
	if code, _, se := e.bob.exitCode("ssh", e.login+"@web-1", "true"); code != 0 {
		t.Fatalf("tunnel ssh: exit %d\n%s", code, se)
	}
	var list []struct {
		ID       string    `json:"id"`
		User     string    `json:"user"`
		Deadline time.Time `json:"deadline"`
	}
	if err := json.Unmarshal([]byte(e.admin.must("admin", "sessions", "ls", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range list {
		if s.User != "bob" {
			continue
		}
		n++
		if s.Deadline.After(sshExpiry) || s.Deadline.After(tlsExpiry) {
			t.Errorf("session %s ends %s, after bob's login (%s)", s.ID, s.Deadline, tlsExpiry)
		}
	}
	if n != 2 {
		t.Errorf("%d sessions of bob; want 2", n)
	}
	if code, _, se := e.bob.exitCode("ssh", "--ttl", "2h", e.login+"@web-1", "true"); code == 0 || !strings.Contains(se, "would outlive your login") {
		t.Errorf("tunnel ssh --ttl 2h from a 30 min login: exit %d, %q; want it refused", code, se)
	}
}

func jhSSHCertExpiry(t *testing.T, path string) time.Time {
	t.Helper()
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(mustRead(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(int64(pk.(*ssh.Certificate).ValidBefore), 0)
}

func jhTLSCertExpiry(t *testing.T, path string) time.Time {
	t.Helper()
	b, _ := pem.Decode([]byte(mustRead(t, path)))
	if b == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// TestLockUserNamedLikeAgent: locking the user web-1 leaves the agent
// web-1 alone: its certificates still connect (it comes back after a
// restart) and bob still reaches the node.
func TestLockUserNamedLikeAgent(t *testing.T) {
	e := newSSHEnv(t)
	twin := addUser(t, e.admin, "web-1", "ops")
	twin.login()
	e.admin.must("admin", "users", "lock", "web-1")
	if code, _, _ := twin.exitCode("ls"); code == 0 {
		t.Error("the locked user web-1 can still use the API")
	}
	// A reconnect presents the agent's certificates afresh.
	e.web.stop()
	e.web.start("")
	e.admin.waitOnline("web-1", true, 30*time.Second)
	if code, out, se := e.bob.exitCode("ssh", e.login+"@web-1", "echo", "agent-alive"); code != 0 || !strings.Contains(out, "agent-alive") {
		t.Errorf("tunnel ssh to web-1 after locking the user web-1: exit %d\n%s%s", code, out, se)
	}
}

// TestSessionEndsWithTheLoginSaysExpired: a session cut because the login
// it came from expired tells the user "session expired", through tunnel ssh
// and through the jump host.
func TestSessionEndsWithTheLoginSaysExpired(t *testing.T) {
	e := newJHEnv(t)
	e.bob.login("--ttl", "20s")
	start := time.Now()
	code, _, se := e.bob.exitCode("ssh", e.login+"@web-1", "sleep", "90")
	if code == 0 || !strings.Contains(se, "session expired") || strings.Contains(se, "closed before the command finished") {
		t.Errorf("tunnel ssh from a 20 s login, running sleep 90: exit %d, stderr %q; want it cut with 'session expired'", code, se)
	}
	if d := time.Since(start); d > 80*time.Second {
		t.Errorf("the session ran %s; want it cut when the 20 s login expired", d)
	}

	e.bob.login("--ttl", "20s")
	code, out := jhRun(t, "ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@web-1", "sleep 90")
	if code == 0 || !strings.Contains(out, "session expired") {
		t.Errorf("ssh -J from a 20 s login, running sleep 90: exit %d; want it cut with 'session expired'\n%s", code, out)
	}
}
