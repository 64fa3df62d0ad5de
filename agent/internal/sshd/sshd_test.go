package sshd

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestExecExitStatusAndStdout(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "s1"})
	id := e.newIdentity("id", certOpts{session: "s1"})

	r := e.ssh(id, nil, "echo hello; echo oops >&2; exit 7")
	if r.code != 7 {
		t.Fatalf("exit code = %d; want 7 (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != "hello\n" {
		t.Errorf("stdout = %q; want %q", r.stdout, "hello\n")
	}
	if !strings.Contains(r.stderr, "oops") {
		t.Errorf("stderr = %q; want it to contain %q", r.stderr, "oops")
	}

	r = e.ssh(id, nil, `echo "$USER $TUNNEL_SESSION_ID $PATH"`)
	if r.code != 0 || !strings.HasPrefix(r.stdout, e.login+" s1 /usr/local/") {
		t.Errorf("environment = %q (code %d, stderr %q); want the login, the session and a sane PATH", r.stdout, r.code, r.stderr)
	}
}

func TestRecordingCapturesOutput(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "rec"})
	id := e.newIdentity("id", certOpts{session: "rec"})
	if r := e.ssh(id, nil, "echo hello"); r.code != 0 {
		t.Fatalf("exit code = %d; want 0 (stderr %q)", r.code, r.stderr)
	}
	rec := e.record("rec")
	if rec == nil {
		t.Fatal("no recording")
	}
	out, closed := rec.snapshot()
	if out != "hello\n" || !closed {
		t.Errorf("recording = %q, closed %v; want %q, closed", out, closed, "hello\n")
	}
}

func TestEnvFiltered(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "env"})
	id := e.newIdentity("id", certOpts{session: "env"})
	cmd := exec.Command("ssh", append(e.sshArgs("-p", id),
		"-o", "SendEnv=LC_TEST SECRET_TEST", e.login+"@127.0.0.1", `echo "[$LC_TEST][$SECRET_TEST]"`)...)
	cmd.Env = append(os.Environ(), "LC_TEST=yes", "SECRET_TEST=no")
	r := e.run(cmd)
	if want := "[yes][]\n"; r.stdout != want {
		t.Errorf("stdout = %q; want %q (stderr %q)", r.stdout, want, r.stderr)
	}
}

func TestRefused(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "ok"})
	e.mu.Lock()
	e.revoked[5000] = true
	e.mu.Unlock()
	tests := []struct {
		name string
		opts certOpts
		want string // in stderr, besides "Permission denied"
	}{
		{name: "wrong principal", opts: certOpts{session: "ok", principals: []string{"someone-else"}}},
		{name: "no principals", opts: certOpts{session: "ok", noPrincipal: true}},
		{name: "expired", opts: certOpts{session: "ok", validAfter: time.Now().Add(-2 * time.Hour), validBefore: time.Now().Add(-time.Hour)}},
		{name: "not yet valid", opts: certOpts{session: "ok", validAfter: time.Now().Add(time.Hour), validBefore: time.Now().Add(2 * time.Hour)}},
		{name: "signed by the host CA", opts: certOpts{session: "ok", signer: e.hostCA}},
		{name: "host certificate", opts: certOpts{session: "ok", certType: gossh.HostCert}},
		{name: "plain key", opts: certOpts{plain: true}},
		{name: "no session in key id", opts: certOpts{keyID: "user=alice serial=1"}},
		{name: "unknown session", opts: certOpts{session: "gone"}, want: "session revoked by an administrator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := e.newIdentity(strings.ReplaceAll(tt.name, " ", "-"), tt.opts)
			r := e.ssh(id, nil, "true")
			if r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
				t.Errorf("ssh = code %d, stderr %q; want 255 and Permission denied", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr = %q; want it to contain %q", r.stderr, tt.want)
			}
		})
	}

	t.Run("revoked serial", func(t *testing.T) {
		id := e.newIdentity("revoked", certOpts{session: "ok"})
		e.mu.Lock()
		e.revoked[id.cert.Serial] = true
		e.mu.Unlock()
		if r := e.ssh(id, nil, "true"); r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("ssh = code %d, stderr %q; want 255 and Permission denied", r.code, r.stderr)
		}
	})
}

// TestOfferedKeyGrantsNothing is the CVE-2024-45337 class: the client
// offers a valid certificate it cannot sign with (its private key is
// passphrase-protected and ssh runs in batch mode), then authenticates with
// another key. The session must be the second key's, or none.
func TestOfferedKeyGrantsNothing(t *testing.T) {
	testenv.LookPath(t, "ssh-keygen")
	e := newEnv(t)
	e.addSession(Session{ID: "admin"})
	e.addSession(Session{ID: "low"})
	offered := e.newIdentity("offered", certOpts{session: "admin"})
	// Lock the offered key: ssh can read its public half, not sign.
	if out, err := exec.Command("ssh-keygen", "-p", "-f", offered.keyFile, "-P", "", "-N", "secret-passphrase").CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -p: %v: %s", err, out)
	}

	t.Run("other certificate", func(t *testing.T) {
		held := e.newIdentity("held", certOpts{session: "low"})
		args := append(e.sshArgs("-p", offered, held), e.login+"@127.0.0.1", `echo "$TUNNEL_SESSION_ID"`)
		r := e.run(exec.Command("ssh", args...))
		if !regexp.MustCompile(`msg="ssh certificate acceptable" .* session=admin `).MatchString(e.logs.String()) {
			t.Fatalf("the locked certificate was never offered; server log:\n%s", e.logs.String())
		}
		if r.code != 0 || r.stdout != "low\n" {
			t.Errorf("ssh = code %d, stdout %q, stderr %q; want the session of the key that signed (low)", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("plain key", func(t *testing.T) {
		plain := e.newIdentity("plain", certOpts{plain: true})
		args := append(e.sshArgs("-p", offered, plain), e.login+"@127.0.0.1", "true")
		r := e.run(exec.Command("ssh", args...))
		if r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("ssh = code %d, stderr %q; want 255 and Permission denied", r.code, r.stderr)
		}
	})
}

func TestDeadline(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "short", Deadline: time.Now().Add(3 * time.Second)})
	id := e.newIdentity("id", certOpts{session: "short"})
	start := time.Now()
	r := e.ssh(id, nil, "sleep 30")
	if r.code != 255 {
		t.Errorf("exit code = %d; want 255", r.code)
	}
	if !strings.Contains(r.stderr, "session expired at ") || !strings.Contains(r.stderr, "run tunnel ssh again for a new session") {
		t.Errorf("stderr = %q; want the session expired message", r.stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("session lasted %v; want about 3s", d)
	}
}

func TestDeadlineCappedByCertificate(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "long", Deadline: time.Now().Add(time.Hour)})
	id := e.newIdentity("id", certOpts{session: "long", validBefore: time.Now().Add(3 * time.Second)})
	r := e.ssh(id, nil, "sleep 30")
	if r.code != 255 || !strings.Contains(r.stderr, "session expired at ") {
		t.Errorf("ssh = code %d, stderr %q; want 255 and session expired", r.code, r.stderr)
	}
}

func TestEndSession(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "victim"})
	id := e.newIdentity("id", certOpts{session: "victim"})
	cmd := exec.Command("ssh", append(e.sshArgs("-p", id), e.login+"@127.0.0.1", "echo started; sleep 30")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "started\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("first line = %q, %v; want started (stderr %q)", line, err, stderr.String())
	}
	const reason = "access revoked by an administrator"
	e.srv.EndSession("victim", reason)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("ssh still running 15s after EndSession")
	}
	if code := cmd.ProcessState.ExitCode(); code != 255 {
		t.Errorf("exit code = %d; want 255", code)
	}
	if !strings.Contains(stderr.String(), reason) {
		t.Errorf("stderr = %q; want it to contain %q", stderr.String(), reason)
	}
	// The session stays ended for new connections.
	if r := e.ssh(id, nil, "true"); r.code != 255 || !strings.Contains(r.stderr, "has ended") {
		t.Errorf("new connection after EndSession = code %d, stderr %q; want refused", r.code, r.stderr)
	}
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "idle", IdleTimeout: time.Second})
	id := e.newIdentity("id", certOpts{session: "idle"})
	pr, pw, err := os.Pipe() // stdin that sends nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	cmd := exec.Command("ssh", append(e.sshArgs("-p", id), "-tt", e.login+"@127.0.0.1")...)
	cmd.Stdin = pr
	start := time.Now()
	r := e.run(cmd)
	pr.Close()
	if r.code != 255 || !strings.Contains(r.stderr, "session closed after 1s of inactivity") {
		t.Errorf("ssh = code %d, stderr %q; want 255 and inactivity", r.code, r.stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("idle session lasted %v; want about 1s", d)
	}
}

func TestPTYWindowSize(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "pty"})
	id := e.newIdentity("id", certOpts{session: "pty"})
	cmd := exec.Command("ssh", append(e.sshArgs("-p", id), "-tt", e.login+"@127.0.0.1", `stty size; echo "term=$TERM"`)...)
	cmd.Env = append(os.Environ(), "TERM=xterm-test")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 101})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := ptmx.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break // EIO once ssh exits
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("ssh: %v; output %q", err, out.String())
	}
	if !strings.Contains(out.String(), "33 101\r\n") || !strings.Contains(out.String(), "term=xterm-test") {
		t.Errorf("output = %q; want 33 101 and term=xterm-test", out.String())
	}
	rec := e.record("pty")
	if rec == nil || rec.width != 101 || rec.height != 33 || rec.term != "xterm-test" {
		t.Fatalf("recording = %+v; want 101x33 xterm-test", rec)
	}
	if got, _ := rec.snapshot(); !strings.Contains(got, "33 101") {
		t.Errorf("recording = %q; want it to contain the output", got)
	}
}

func TestSCP(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "scp"})
	id := e.newIdentity("id", certOpts{session: "scp"})
	data := make([]byte, 3<<20+17)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(e.dir, "src.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	remote := t.TempDir()
	for _, mode := range []struct {
		name string
		flag []string
	}{{"legacy-scp", []string{"-O"}}, {"sftp", nil}} {
		t.Run(mode.name, func(t *testing.T) {
			up := filepath.Join(remote, "up-"+mode.name)
			down := filepath.Join(e.dir, "down-"+mode.name)
			args := append(append(e.sshArgs("-P", id), mode.flag...), src, e.login+"@127.0.0.1:"+up)
			if r := e.run(exec.Command("scp", args...)); r.code != 0 {
				t.Fatalf("scp upload: code %d, stderr %q", r.code, r.stderr)
			}
			args = append(append(e.sshArgs("-P", id), mode.flag...), e.login+"@127.0.0.1:"+up, down)
			if r := e.run(exec.Command("scp", args...)); r.code != 0 {
				t.Fatalf("scp download: code %d, stderr %q", r.code, r.stderr)
			}
			for _, p := range []string{up, down} {
				got, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if sha256.Sum256(got) != sha256.Sum256(data) {
					t.Errorf("%s: sha256 differs from the source", p)
				}
			}
		})
	}
}

func TestSFTPBatch(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "sftp"})
	id := e.newIdentity("id", certOpts{session: "sftp"})
	remote := t.TempDir()
	src := filepath.Join(e.dir, "a.txt")
	writeFile(t, src, "hello over sftp\n")
	back := filepath.Join(e.dir, "b.txt")
	batch := filepath.Join(e.dir, "batch")
	writeFile(t, batch, strings.Join([]string{
		"cd " + remote,
		"put " + src + " a.txt",
		"ls",
		"get a.txt " + back,
		"bye",
	}, "\n")+"\n")
	args := append(e.sshArgs("-P", id), "-b", batch, e.login+"@127.0.0.1")
	if r := e.run(exec.Command("sftp", args...)); r.code != 0 {
		t.Fatalf("sftp: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, p := range []string{filepath.Join(remote, "a.txt"), back} {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "hello over sftp\n" {
			t.Errorf("%s = %q, %v; want the uploaded text", p, got, err)
		}
	}
}

func TestForwardingRefusedUnlessAllowed(t *testing.T) {
	e := newEnv(t)
	e.addSession(Session{ID: "nofwd"})
	e.addSession(Session{ID: "fwd", AllowPortForwarding: true})
	for _, tt := range []struct {
		session string
		want    string
	}{
		{"nofwd", "port forwarding is not allowed"},
		{"fwd", ""},
	} {
		t.Run(tt.session, func(t *testing.T) {
			id := e.newIdentity(tt.session, certOpts{session: tt.session})
			// -W connects stdin/stdout to a direct-tcpip channel to the
			// server's own port: the SSH banner comes back when allowed.
			r := e.ssh(id, []string{"-W", e.addr.String()})
			if tt.want != "" {
				if r.code != 255 || !strings.Contains(r.stderr, tt.want) {
					t.Errorf("ssh -W = code %d, stderr %q; want refused with %q", r.code, r.stderr, tt.want)
				}
				return
			}
			if !strings.HasPrefix(r.stdout, "SSH-2.0-tunnel-agent") {
				t.Errorf("ssh -W stdout = %q, stderr %q; want the server's banner", r.stdout, r.stderr)
			}
		})
	}
}

func TestAgentForwarding(t *testing.T) {
	testenv.LookPath(t, "ssh-agent")
	e := newEnv(t)
	e.addSession(Session{ID: "agent", AllowAgentForwarding: true})
	e.addSession(Session{ID: "noagent"})
	sock := filepath.Join(e.dir, "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("ssh-agent did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tt := range []struct {
		session string
		want    string
	}{
		{"agent", "The agent has no identities.\n"},
		{"noagent", "no agent\n"},
	} {
		t.Run(tt.session, func(t *testing.T) {
			id := e.newIdentity(tt.session, certOpts{session: tt.session})
			cmd := exec.Command("ssh", append(e.sshArgs("-p", id), "-A", e.login+"@127.0.0.1",
				`if [ -n "$SSH_AUTH_SOCK" ]; then ssh-add -l; else echo no agent; fi`)...)
			cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
			r := e.run(cmd)
			if r.stdout != tt.want {
				t.Errorf("stdout = %q (code %d, stderr %q); want %q", r.stdout, r.code, r.stderr, tt.want)
			}
		})
	}
}
