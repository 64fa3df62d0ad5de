// Package integration holds the end-to-end tests: they build the real
// binaries once, start a real gateway (and, where needed, a real OpenSSH
// sshd) on loopback, and drive the `tunnel` CLI the way a person or a
// script would.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tunnel-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/tunnelhq/tunnel/gateway/cmd/tunnel-gateway",
		"github.com/tunnelhq/tunnel/agent/cmd/tunnel-agent",
		"github.com/tunnelhq/tunnel/client/cmd/tunnel")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// cluster is a running gateway started from the real binary.
type cluster struct {
	t        testing.TB
	dataDir  string
	addr     string
	pin      string
	name     string
	cmd      *exec.Cmd
	log      *syncBuffer
	done     chan struct{}
	waitErr  error
	admin    string
	adminPW  string
	adminOTP *otpSource
	sshAddr  string // the jump host, when started with --ssh-addr
}

// startCluster runs tunnel-gateway init and run, and waits until the API
// listens. extra flags go to run.
func startCluster(t testing.TB, extra ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t, dataDir: filepath.Join(dir, "data"), name: "itest", admin: "alice",
		adminPW: "correct horse battery staple"}
	pwFile := writeSecret(t, c.adminPW)
	out, err := exec.Command(bin("tunnel-gateway"), "init", "--data-dir", c.dataDir, "--cluster", c.name,
		"--admin", c.admin, "--admin-password-file", pwFile, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("tunnel-gateway init: %v\n%s", err, out)
	}
	var res struct {
		Pin   string `json:"ca_pin"`
		Admin struct {
			Secret string `json:"secret"`
			URI    string `json:"otpauth_uri"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("init --json printed something that is not JSON: %v\n%s", err, out)
	}
	if !strings.HasPrefix(res.Pin, "sha256:") || res.Admin.Secret == "" || !strings.HasPrefix(res.Admin.URI, "otpauth://totp/") {
		t.Fatalf("init --json = %s; want a pin and a TOTP enrolment", out)
	}
	c.pin = res.Pin
	c.adminOTP = newOTPSource(res.Admin.Secret)
	c.start(extra...)
	return c
}

var (
	listenRE    = regexp.MustCompile(`listening on (\S+) `)
	sshListenRE = regexp.MustCompile(`SSH jump host listening on (\S+)`)
)

func (c *cluster) start(extra ...string) {
	t := c.t
	t.Helper()
	args := append([]string{"run", "--data-dir", c.dataDir, "--api-addr", "127.0.0.1:0", "--log-level", "debug"}, extra...)
	c.cmd = exec.Command(bin("tunnel-gateway"), args...)
	c.log = &syncBuffer{}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	c.done = make(chan struct{})
	addrc := make(chan string, 1)
	sshc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			c.log.Write([]byte(line + "\n"))
			if m := sshListenRE.FindStringSubmatch(line); m != nil {
				select {
				case sshc <- m[1]:
				default:
				}
				continue
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", c.log.String())
		}
	})
	select {
	case c.addr = <-addrc:
	case <-c.done:
		t.Fatalf("gateway exited at start: %v\n%s", c.waitErr, c.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not start listening within 30s\n%s", c.log.String())
	}
	if slices.Contains(args, "--ssh-addr") {
		select {
		case c.sshAddr = <-sshc:
		case <-time.After(10 * time.Second):
			t.Fatalf("the gateway did not report its SSH jump host\n%s", c.log.String())
		}
	}
}

// stop sends SIGTERM and waits; it returns the exit error.
func (c *cluster) stop() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	select {
	case <-c.done:
		return c.waitErr
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return c.waitErr
}

// user is a person with their own TUNNEL_HOME.
type user struct {
	c      *cluster
	name   string
	pw     string
	otp    *otpSource
	home   string
	pwPath string
}

func (c *cluster) adminUser() *user {
	return c.newUserHandle(c.admin, c.adminPW, c.adminOTP)
}

func (c *cluster) newUserHandle(name, pw string, otp *otpSource) *user {
	return &user{c: c, name: name, pw: pw, otp: otp, home: c.t.TempDir(), pwPath: writeSecret(c.t, pw)}
}

// run runs the tunnel CLI as u; it returns stdout, stderr and the error.
func (u *user) run(args ...string) (string, string, error) {
	return u.runEnv(nil, args...)
}

func (u *user) runEnv(env []string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("tunnel"), args...)
	cmd.Env = append(cleanEnv(), "TUNNEL_HOME="+u.home)
	cmd.Env = append(cmd.Env, env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.Stdin = nil
	err := cmd.Run()
	return so.String(), se.String(), err
}

// must runs the CLI and fails the test on error.
func (u *user) must(args ...string) string {
	u.c.t.Helper()
	so, se, err := u.run(args...)
	if err != nil {
		u.c.t.Fatalf("tunnel %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, so, se)
	}
	return so
}

// fails runs the CLI, wants it to fail, and returns its stderr.
func (u *user) fails(args ...string) string {
	u.c.t.Helper()
	so, se, err := u.run(args...)
	if err == nil {
		u.c.t.Fatalf("tunnel %s succeeded; want an error\nstdout: %s", strings.Join(args, " "), so)
	}
	return se
}

// login logs u in with the next unused TOTP code.
func (u *user) login(extra ...string) string {
	u.c.t.Helper()
	args := append([]string{"login", "--gateway", u.c.addr, "--ca-pin", u.c.pin, "--user", u.name,
		"--password-file", u.pwPath, "--otp", u.otp.next(u.c.t)}, extra...)
	return u.must(args...)
}

// cleanEnv is the environment without variables that would change the
// CLI's behaviour behind the test's back.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TUNNEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func writeSecret(t testing.TB, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// otpSource hands out TOTP codes of steps the gateway has not seen yet,
// like a person who waits for the next code: the gateway accepts the
// current step and the next one, so it waits only when both are used.
type otpSource struct {
	secret string
	mu     sync.Mutex
	last   int64
}

func newOTPSource(secret string) *otpSource { return &otpSource{secret: secret} }

func (o *otpSource) next(t testing.TB) string {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		now := time.Now()
		cur := now.Unix() / 30
		for step := cur; step <= cur+1; step++ {
			if step > o.last {
				o.last = step
				code, err := totp.GenerateCode(o.secret, time.Unix(step*30, 0))
				if err != nil {
					t.Fatal(err)
				}
				return code
			}
		}
		time.Sleep(time.Until(time.Unix((cur+1)*30, 0)) + 50*time.Millisecond)
	}
}

// current returns the code of the current step without marking it used.
func (o *otpSource) current(t testing.TB) string {
	code, err := totp.GenerateCode(o.secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return code
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)
