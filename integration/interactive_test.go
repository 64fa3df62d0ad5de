package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ptySession runs `tunnel ssh LOGIN@web-1` as u on a pseudo-terminal.
type ptySession struct {
	t    *testing.T
	cmd  *exec.Cmd
	f    *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (u *user) startPTY(t *testing.T, args ...string) *ptySession {
	t.Helper()
	cmd := exec.Command(bin("tunnel"), args...)
	cmd.Env = append(cleanEnv(), "TUNNEL_HOME="+u.home, "TERM=xterm", "PS1=tunnel-test$ ")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatalf("start tunnel ssh on a pty: %v", err)
	}
	p := &ptySession{t: t, cmd: cmd, f: f, done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); f.Close() })
	return p
}

func (p *ptySession) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// expect waits until the terminal shows want.
func (p *ptySession) expect(want string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.output(), want) {
		if time.Now().After(deadline) {
			p.t.Fatalf("the terminal did not show %q within %s; it shows:\n%s", want, timeout, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *ptySession) send(s string) {
	p.t.Helper()
	if _, err := p.f.Write([]byte(s)); err != nil {
		p.t.Fatalf("type %q: %v", s, err)
	}
}

func (p *ptySession) wait(timeout time.Duration) error {
	select {
	case err := <-p.done:
		return err
	case <-time.After(timeout):
		p.t.Fatalf("tunnel ssh did not exit within %s:\n%s", timeout, p.output())
		return nil
	}
}

// TestInteractiveSessionRecorded drives a shell through a pseudo-terminal:
// prompt, a typed command and its output, a window resize, exit; then the
// recording replays the command and its output.
func TestInteractiveSessionRecorded(t *testing.T) {
	e := newSSHEnv(t)
	p := e.bob.startPTY(t, "ssh", e.login+"@web-1")
	p.send("echo typed-$((40+2))\r")
	p.expect("typed-42", 15*time.Second)
	if err := pty.Setsize(p.f, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	p.send("stty size\r")
	p.expect("40 120", 10*time.Second)
	p.send("exit\r")
	if err := p.wait(15 * time.Second); err != nil {
		t.Errorf("tunnel ssh after exit: %v\n%s", err, p.output())
	}

	var id string
	waitFor(t, 20*time.Second, "the session's recording to reach the gateway", func() bool {
		var list []struct {
			ID        string `json:"id"`
			Recording bool   `json:"recording"`
		}
		json.Unmarshal([]byte(e.admin.must("admin", "sessions", "ls", "--json")), &list)
		for _, s := range list {
			if s.Recording {
				id = s.ID
				return true
			}
		}
		return false
	})
	raw := e.admin.must("admin", "sessions", "play", id, "--raw")
	if !strings.HasPrefix(raw, `{"version":2`) || !strings.Contains(raw, "typed-42") || !strings.Contains(raw, `"r", "120x40"`) {
		t.Errorf("the recording lacks the header, the command's output or the resize:\n%.2000s", raw)
	}
	played := e.admin.must("admin", "sessions", "play", id, "--speed", "100")
	if !strings.Contains(played, "typed-42") {
		t.Errorf("play did not replay the command's output:\n%.2000s", played)
	}
}

// TestIdleTimeout: a session without traffic is closed at the idle
// timeout, and the user is told.
func TestIdleTimeout(t *testing.T) {
	env := newSSHEnvWith(t, "--idle-timeout", "2s")
	p := env.bob.startPTY(t, "ssh", env.login+"@web-1")
	p.send("echo ready\r")
	p.expect("ready", 15*time.Second)
	p.wait(20 * time.Second)
	// The terminal's last output may still be on its way from the pty.
	p.expect("inactivity", 10*time.Second)
}
