package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// agentProc is a tunnel-agent started from the real binary.
type agentProc struct {
	t       testing.TB
	name    string
	dataDir string
	cfgFile string
	c       *cluster
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan struct{}
	waitErr error
}

// startAgent enrols (when token is set) and runs an agent with the given
// YAML configuration.
func (c *cluster) startAgent(name, token, yaml string) *agentProc {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{t: t, name: name, dataDir: filepath.Join(dir, "data"), cfgFile: filepath.Join(dir, "agent.yaml"), c: c}
	if err := os.WriteFile(a.cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(token)
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", a.name, a.log.String())
		}
	})
	return a
}

func (a *agentProc) start(token string) {
	a.t.Helper()
	args := []string{"run", "--data-dir", a.dataDir, "--gateway", a.c.addr, "--ca-pin", a.c.pin,
		"--config", a.cfgFile, "--log-level", "debug"}
	if token != "" {
		args = append(args, "--token", token)
	}
	a.cmd = exec.Command(bin("tunnel-agent"), args...)
	a.log = &syncBuffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start agent %s: %v", a.name, err)
	}
	a.done = make(chan struct{})
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
}

// wait waits for the agent to exit and returns its error and log.
func (a *agentProc) wait(timeout time.Duration) (error, string) {
	select {
	case <-a.done:
		return a.waitErr, a.log.String()
	case <-time.After(timeout):
		a.t.Fatalf("agent %s did not exit within %s\n%s", a.name, timeout, a.log.String())
		return nil, ""
	}
}

func (a *agentProc) stop() error {
	if a.cmd == nil || a.cmd.Process == nil {
		return nil
	}
	select {
	case <-a.done:
		return a.waitErr
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	return a.waitErr
}

func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// token has the admin create a join token for an agent.
func (u *user) token(agent string) string {
	u.c.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(u.must("admin", "tokens", "create", "--agent", agent, "--json")), &tok); err != nil || tok.Token == "" {
		u.c.t.Fatalf("tokens create --json: %v", err)
	}
	return tok.Token
}

// agentsOnline returns the online flag of every agent.
func (u *user) agentsOnline() map[string]bool {
	u.c.t.Helper()
	var agents []struct {
		Name   string `json:"name"`
		Online bool   `json:"online"`
	}
	if err := json.Unmarshal([]byte(u.must("admin", "agents", "ls", "--json")), &agents); err != nil {
		u.c.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, a := range agents {
		out[a.Name] = a.Online
	}
	return out
}

// waitOnline polls until agent's online state is want.
func (u *user) waitOnline(agent string, want bool, timeout time.Duration) {
	u.c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if u.agentsOnline()[agent] == want {
			return
		}
		if time.Now().After(deadline) {
			u.c.t.Fatalf("agent %s online=%v after %s; want %v", agent, !want, timeout, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testServer is a TCP service on the database side.
type testServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

// serve runs handle for every connection until the test ends.
func serve(t testing.TB, handle func(net.Conn)) *testServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// echoHandler echoes until the client half-closes, then closes.
func echoHandler(c net.Conn) {
	_, _ = io.Copy(c, c)
}

// hashHandler reads until the client half-closes, then answers with the
// hex SHA-256 of everything it read: a half-closing client must still get
// the full answer.
func hashHandler(c net.Conn) {
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		return
	}
	fmt.Fprintf(c, "%x\n", h.Sum(nil))
}

// sourceSize is what the source service sends.
const sourceSize = 100 << 20

// sourceHandler sends sourceSize bytes of a fixed pseudo-random stream.
func sourceHandler(c net.Conn) {
	_, _ = io.Copy(c, io.LimitReader(newPRNG(42), sourceSize))
}

func newPRNG(seed uint64) io.Reader {
	return &prng{r: rand.New(rand.NewPCG(seed, seed))}
}

type prng struct{ r *rand.Rand }

func (p *prng) Read(b []byte) (int, error) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := p.r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) - len(b)%8; i < len(b); i++ {
		b[i] = byte(p.r.Uint64())
	}
	return len(b), nil
}

func sourceDigest() string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(newPRNG(42), sourceSize))
	return hex.EncodeToString(h.Sum(nil))
}

// dialRetry connects to addr, retrying while the tunnel comes up: the
// listener accepts at once, but the first streams may be refused until the
// agents are connected.
func dialRetry(t testing.TB, addr string, check func(net.Conn) error, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			err = check(c)
			c.Close()
			if err == nil {
				return
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no working connection through %s within %s: %v", addr, timeout, last)
}

// echoOnce checks one small round trip.
func echoOnce(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return echoOn(c)
}

// echoOn is echoOnce under the deadline already set on c.
func echoOn(c net.Conn) error {
	msg := []byte("ping\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != "ping\n" {
		return fmt.Errorf("echo = %q", got)
	}
	return nil
}

// freeLoopbackPort returns a port free on both 127.0.0.1 and 127.0.0.2.
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	// Client sockets of other tests (floods from 127.0.0.x) may hold the
	// port on 127.0.0.2 for a while: try many ports before giving up.
	var lastErr error
	for range 500 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
		l1.Close()
		if err == nil {
			l2.Close()
			return port
		}
		lastErr = err
	}
	t.Fatalf("no port free on both 127.0.0.1 and 127.0.0.2 (last: %v)", lastErr)
	return 0
}

func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

var _ = strings.Contains
