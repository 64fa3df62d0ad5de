package integration

// The environment of the hostile-client suite (hostile_test.go): the
// processes under attack and their restarts, the legitimate user who must
// keep working, the inventory of listeners, the clients attackers use, and
// the count of open descriptors.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/hostile"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// hostileEnv is a gateway with its jump host, a node (web-1: an echo
// service and its SSH endpoint), an app agent (app-1) listening for
// web-1/echo, and bob's `tunnel proxy db web-1/echo`.
type hostileEnv struct {
	c        *cluster
	gwFlags  []string // given to every start of the gateway
	admin    *user
	bob      *user // runs the proxy
	mallory  *user // an authenticated user who misbehaves towards the node
	osLogin  string
	web, app *hostileProc
	proxy    *hostileProc
	agentAd  string // app-1's listener
	proxyAd  string // the proxy's listener
	hello    []byte // a real TLS ClientHello
	kexinit  []byte // a real SSH KEXINIT packet
	initials [][]byte

	apiHS, jumpHS, sshdHS, quicHS time.Duration

	mu       sync.Mutex // guards the fields below
	pool     []*user    // users who log in after each attack
	next     int
	sshCfgs  map[*user]string
	gen      int            // the gateway's generation: one more at each restart
	baseline map[string]int // descriptors before the attacks (or at a restart)
	restarts map[string]int // restarts of each process
	held     map[string]*hostileHeld
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	testenv.LookPath(t, "ssh")
	e := &hostileEnv{osLogin: testenv.CurrentUser(t), sshCfgs: map[*user]string{},
		baseline: map[string]int{}, restarts: map[string]int{}, held: map[string]*hostileHeld{}}
	e.timeoutFlags()
	e.c = startCluster(t, append([]string{"--login-burst", "1000", "--ssh-addr", "127.0.0.1:0"}, e.gwFlags...)...)
	e.admin = e.c.adminUser()
	e.admin.login()
	e.admin.must("admin", "roles", "add", "ops", "--login", e.osLogin, "--node", "web-*", "--service", "web-1/echo", "--max-ttl", "2h")

	// Users log in after every attack; each can use two TOTP steps at once
	// and one more every 30 s, so there are enough of them never to wait.
	names := []string{"bob", "mallory"}
	for i := range 40 {
		names = append(names, fmt.Sprintf("user%02d", i))
	}
	users := make([]*user, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			users[i], errs[i] = hostileAddUser(e.admin, n, "ops")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	e.bob, e.mallory, e.pool = users[0], users[1], users[2:]
	e.bob.login()
	e.mallory.login()

	echo := serve(t, echoHandler)
	e.agentAd = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	e.web = e.startAgent(t, "web-1", "expose:\n  - {name: echo, address: "+echo.addr()+"}\n", e.sshdFlags())
	e.app = e.startAgent(t, "app-1", "listen:\n  - {name: echo, address: "+e.agentAd+", target: web-1/echo}\n", nil)
	e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/echo")
	e.admin.waitOnline("web-1", true, 20*time.Second)
	e.admin.waitOnline("app-1", true, 20*time.Second)
	dialRetry(t, e.agentAd, echoOnce, 20*time.Second)

	port := testenv.FreePort(t)
	e.proxyAd = fmt.Sprintf("127.0.0.1:%d", port)
	e.proxy = startHostileProc(t, "proxy", bin("tunnel"), []string{"proxy", "db", "web-1/echo", "--port", strconv.Itoa(port)},
		nil, []string{"TUNNEL_HOME=" + e.bob.home})
	dialRetry(t, e.proxyAd, echoOnce, 20*time.Second)

	var err error
	if e.hello, err = hostile.TLSClientHello("localhost"); err != nil {
		t.Fatal(err)
	}
	if e.kexinit, err = hostile.SSHKexInit(); err != nil {
		t.Fatal(err)
	}
	if e.initials, err = hostile.CaptureInitials(hostileInitialFlood+2, wire.ALPN); err != nil {
		t.Fatal(err)
	}

	// A first legitimate round opens what stays open (connections, the
	// database, caches); the descriptors counted after it are the baseline.
	e.legit(t)
	if t.Failed() {
		t.FailNow()
	}
	e.baseline = e.fdCounts()
	t.Logf("handshake timeouts: API %s, QUIC %s, jump host %s, node SSH %s; gateway flags %q; descriptors before the attacks %v",
		e.apiHS, e.quicHS, e.jumpHS, e.sshdHS, e.gwFlags, e.baseline)
	return e
}

// timeoutFlags sets small handshake timeouts through whatever flags
// tunnel-gateway run offers for them: one naming ssh or jump is the jump
// host's, any other (--handshake-timeout) the API's and QUIC's.
func (e *hostileEnv) timeoutFlags() {
	e.apiHS, e.jumpHS, e.sshdHS, e.quicHS = hostileDefaultAPIHandshake, hostileDefaultJumpHandshake, hostileDefaultSSHDHandshake, transport.HandshakeTimeout
	out, _ := exec.Command(bin("tunnel-gateway"), "run", "--help").CombinedOutput()
	for _, f := range hostileTimeoutFlags(string(out)) {
		e.gwFlags = append(e.gwFlags, "--"+f+"="+hostileSetHandshake.String())
		if strings.Contains(f, "ssh") || strings.Contains(f, "jump") {
			e.jumpHS = hostileSetHandshake
		} else {
			e.apiHS, e.quicHS = hostileSetHandshake, hostileSetHandshake
		}
	}
}

// sshdFlags returns the node agent's flags that set a small SSH handshake
// timeout, if tunnel-agent run has one.
func (e *hostileEnv) sshdFlags() []string {
	out, _ := exec.Command(bin("tunnel-agent"), "run", "--help").CombinedOutput()
	var flags []string
	for _, f := range hostileTimeoutFlags(string(out)) {
		flags = append(flags, "--"+f+"="+hostileSetHandshake.String())
		e.sshdHS = hostileSetHandshake
	}
	return flags
}

var hostileFlagRE = regexp.MustCompile(`--([a-z0-9-]*handshake-timeout)\b`)

func hostileTimeoutFlags(help string) []string {
	var out []string
	for _, m := range hostileFlagRE.FindAllStringSubmatch(help, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// hostileAddUser is addUser without t.Fatal, for use from goroutines.
func hostileAddUser(admin *user, name string, roles ...string) (*user, error) {
	pw := name + "-password-long-enough"
	pwFile := filepath.Join(admin.c.t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := []string{"admin", "users", "add", name, "--password-file", pwFile, "--json"}
	for _, r := range roles {
		args = append(args, "--role", r)
	}
	so, se, err := admin.run(args...)
	if err != nil {
		return nil, fmt.Errorf("users add %s: %v: %s", name, err, se)
	}
	var enr struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(so), &enr); err != nil || enr.Secret == "" {
		return nil, fmt.Errorf("users add %s --json printed %q: %v", name, so, err)
	}
	return &user{c: admin.c, name: name, pw: pw, otp: newOTPSource(enr.Secret), home: admin.c.t.TempDir(), pwPath: pwFile}, nil
}

// ---- processes ----

// hostileProc is a binary the suite started and restarts when it dies.
type hostileProc struct {
	name  string
	path  string
	first []string // arguments of the first start (with a join token)
	args  []string // arguments of later starts
	env   []string

	mu      sync.Mutex // guards the fields below
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan struct{}
	waitErr error
}

func startHostileProc(t *testing.T, name, path string, args, first, env []string) *hostileProc {
	t.Helper()
	if first == nil {
		first = args
	}
	p := &hostileProc{name: name, path: path, first: first, args: args, env: env}
	if err := p.start(p.first); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", p.name, hostileTail(p.output(), 60))
		}
	})
	return p
}

func (e *hostileEnv) startAgent(t *testing.T, name, yaml string, extra []string) *hostileProc {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "--data-dir", filepath.Join(dir, "data"), "--gateway", e.c.addr, "--ca-pin", e.c.pin,
		"--config", cfg, "--log-level", "debug"}, extra...)
	first := append(slices.Clone(args), "--token", e.admin.token(name))
	return startHostileProc(t, name, bin("tunnel-agent"), args, first, nil)
}

func (p *hostileProc) start(args []string) error {
	cmd := exec.Command(p.path, args...)
	cmd.Env = append(cleanEnv(), p.env...)
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.log, p.done, p.waitErr = cmd, log, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *hostileProc) exited() (bool, error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.waitErr
	default:
		return false, nil
	}
}

func (p *hostileProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *hostileProc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// hostileView is what the checks need of one process.
type hostileView struct {
	name   string
	pid    int
	exited bool
	err    error
	log    *syncBuffer
}

func (e *hostileEnv) procs() []hostileView {
	var out []hostileView
	select {
	case <-e.c.done:
		out = append(out, hostileView{name: "gateway", pid: e.c.cmd.Process.Pid, exited: true, err: e.c.waitErr, log: e.c.log})
	default:
		out = append(out, hostileView{name: "gateway", pid: e.c.cmd.Process.Pid, log: e.c.log})
	}
	for _, p := range []*hostileProc{e.web, e.app, e.proxy} {
		ex, err := p.exited()
		p.mu.Lock()
		out = append(out, hostileView{name: p.name, pid: p.cmd.Process.Pid, exited: ex, err: err, log: p.log})
		p.mu.Unlock()
	}
	return out
}

// hostileMark is where each process's log was before an attack.
type hostileMark map[string]struct {
	log *syncBuffer
	n   int
}

func (e *hostileEnv) logMarks() hostileMark {
	m := hostileMark{}
	for _, p := range e.procs() {
		m[p.name] = struct {
			log *syncBuffer
			n   int
		}{p.log, len(p.log.String())}
	}
	return m
}

var hostilePanicRE = regexp.MustCompile(`(?m)^(panic: |fatal error: )|recovered a panic`)

// after checks, after an attack, that the legitimate user still works,
// and then that every process lives and logged no panic since mark (a
// process an attack killed may take a moment to go: the user's round gives
// it that moment).
func (e *hostileEnv) after(t *testing.T, mark hostileMark) {
	t.Helper()
	if hostile.Alive(e.c.cmd.Process.Pid) == nil {
		e.legit(t)
	}
	e.settle()
	for _, p := range e.procs() {
		out := p.log.String()
		if m, ok := mark[p.name]; ok && m.log == p.log && m.n <= len(out) {
			out = out[m.n:]
		}
		switch alive := hostile.Alive(p.pid); {
		case p.exited:
			t.Errorf("%s died (%v); its last log lines:\n%s", p.name, p.err, hostilePanicOrTail(out))
		case alive != nil:
			t.Errorf("%s: %v", p.name, alive)
		case hostilePanicRE.MatchString(out):
			t.Errorf("%s panicked (and lived): the cause must be fixed, not only contained:\n%s", p.name, hostilePanicOrTail(out))
		}
	}
	t.Logf("open descriptors after the attack: %v", e.fdCounts())
}

// settle waits a little for processes that are gone from /proc but not yet
// reaped, so that their exit status and last log lines are known.
func (e *hostileEnv) settle() {
	wait := func(pid int, done <-chan struct{}) {
		if hostile.Alive(pid) == nil {
			return
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	wait(e.c.cmd.Process.Pid, e.c.done)
	for _, p := range []*hostileProc{e.web, e.app, e.proxy} {
		p.mu.Lock()
		pid, done := p.cmd.Process.Pid, p.done
		p.mu.Unlock()
		wait(pid, done)
	}
}

// fdCounts returns the open descriptors of each running process.
func (e *hostileEnv) fdCounts() map[string]int {
	out := map[string]int{}
	for _, p := range e.procs() {
		if n, err := hostile.FDCount(p.pid); err == nil && !p.exited {
			out[p.name] = n
		}
	}
	return out
}

// hostilePanicOrTail returns the panic in log with the top of its stack, or
// the last lines of log when there is none.
func hostilePanicOrTail(log string) string {
	if loc := hostilePanicRE.FindStringIndex(log); loc != nil {
		start := strings.LastIndexByte(log[:loc[0]], '\n') + 1
		return hostileHead(log[start:], 30)
	}
	return hostileTail(log, 15)
}

func hostileHead(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "")
}

func hostileTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// recover restarts whatever an attack killed, so that the attacks after it
// are judged on their own. The baseline of descriptors of what restarted is
// taken again.
func (e *hostileEnv) recover(t *testing.T) {
	e.settle()
	var restarted []string
	select {
	case <-e.c.done:
		e.c.start(append(slices.Clone(e.gwFlags), "--login-burst", "1000", "--api-addr", e.c.addr, "--ssh-addr", e.c.sshAddr)...)
		e.mu.Lock()
		e.gen++
		e.mu.Unlock()
		restarted = append(restarted, "gateway")
	default:
	}
	for _, p := range []*hostileProc{e.web, e.app, e.proxy} {
		if ex, _ := p.exited(); ex {
			if err := p.start(p.args); err != nil {
				t.Errorf("restart %s: %v", p.name, err)
			}
			restarted = append(restarted, p.name)
		}
	}
	if len(restarted) == 0 {
		return
	}
	// Wait for the agents and the proxy to come back before the next attack.
	_ = hostileEcho(e.agentAd, 30*time.Second)
	_ = hostileEcho(e.proxyAd, 30*time.Second)
	fds := e.fdCounts()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, name := range restarted {
		e.restarts[name]++
		e.baseline[name] = fds[name]
	}
}

// ---- the legitimate user ----

// legit is what a legitimate user does after each attack, from 127.0.0.1:
// a fresh login and ssh -J through the jump host to web-1 with the new
// certificate, a stream through app-1's listener and one through bob's
// tunnel proxy db, all to the echo service on web-1.
func (e *hostileEnv) legit(t *testing.T) {
	t.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := hostileEcho(e.agentAd, 15*time.Second); err != nil {
			errc <- fmt.Errorf("a stream through app-1's listener %s: %w", e.agentAd, err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := hostileEcho(e.proxyAd, 15*time.Second); err != nil {
			errc <- fmt.Errorf("a stream through tunnel proxy db on %s: %w", e.proxyAd, err)
		}
	}()
	go func() {
		defer wg.Done()
		u, err := e.legitLogin()
		if err != nil {
			errc <- err
			return
		}
		if err := e.legitSSH(u); err != nil {
			errc <- err
		}
	}()
	wg.Wait()
	close(errc)
	failed := false
	for err := range errc {
		t.Errorf("the legitimate user: %v", err)
		failed = true
	}
	if !failed {
		t.Logf("the legitimate user logged in, ran ssh -J and opened two streams in %s", time.Since(start).Round(time.Millisecond))
	}
}

// legitLogin logs in the next user of the pool who has an unused TOTP step.
func (e *hostileEnv) legitLogin() (*user, error) {
	u, code, err := e.nextCode()
	if err != nil {
		return nil, err
	}
	so, se, err := u.run("login", "--gateway", e.c.addr, "--ca-pin", e.c.pin, "--user", u.name,
		"--password-file", u.pwPath, "--otp", code)
	if err != nil {
		return nil, fmt.Errorf("tunnel login as %s: %v\n%s%s", u.name, err, so, se)
	}
	return u, nil
}

// nextCode picks a user of the pool whose current or next TOTP step is
// unused (the gateway accepts both), waiting for the next step only when
// every user has used both.
func (e *hostileEnv) nextCode() (*user, string, error) {
	for {
		e.mu.Lock()
		cur := time.Now().Unix() / 30
		for i := range e.pool {
			u := e.pool[(e.next+i)%len(e.pool)]
			u.otp.mu.Lock()
			step := max(u.otp.last+1, cur)
			ok := step <= cur+1
			if ok {
				u.otp.last = step
			}
			u.otp.mu.Unlock()
			if ok {
				e.next = (e.next + i + 1) % len(e.pool)
				e.mu.Unlock()
				code, err := totp.GenerateCode(u.otp.secret, time.Unix(step*30, 0))
				return u, code, err
			}
		}
		e.mu.Unlock()
		time.Sleep(time.Until(time.Unix((cur+1)*30, 0)) + 50*time.Millisecond)
	}
}

// legitSSH runs a command on web-1 as u with stock OpenSSH through the jump
// host.
func (e *hostileEnv) legitSSH(u *user) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", "-F", e.sshConfig(u), "-J", "jump", e.osLogin+"@web-1", "echo hostile-legit-ok").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hostile-legit-ok") {
		return fmt.Errorf("ssh -J %s@jump %s@web-1: %v\n%s", u.name, e.osLogin, err, out)
	}
	return nil
}

func (e *hostileEnv) sshConfig(u *user) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.sshCfgs[u]; ok {
		return p
	}
	host, port, _ := net.SplitHostPort(e.c.sshAddr)
	p := filepath.Join(u.home, "ssh_config")
	_ = os.WriteFile(p, []byte(fmt.Sprintf(`Host jump
    HostName %s
    Port %s
    User %s
Host *
    IdentityFile %s
    CertificateFile %s
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile %s
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 20
`, host, port, u.name, filepath.Join(u.home, "key"), filepath.Join(u.home, "key-cert.pub"), filepath.Join(u.home, "known_hosts"))), 0o600)
	e.sshCfgs[u] = p
	return p
}

// hostileEcho checks one echo round trip through addr, retrying for a
// while: right after an attack the service may need a moment.
func hostileEcho(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			err = echoOnce(c)
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo within %s: %w", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ---- the inventory of listeners ----

func (e *hostileEnv) inventory(t *testing.T) {
	apiPort := hostilePort(t, e.c.addr)
	want := map[string][]string{
		"gateway": {fmt.Sprintf("tcp:%d", apiPort), fmt.Sprintf("udp:%d", apiPort), fmt.Sprintf("tcp:%d", hostilePort(t, e.c.sshAddr))},
		"app-1":   {fmt.Sprintf("tcp:%d", hostilePort(t, e.agentAd)), "udp:*", hostilePeerTCP},
		"web-1":   {"udp:*", hostilePeerTCP},
		"proxy":   {fmt.Sprintf("tcp:%d", hostilePort(t, e.proxyAd)), "udp:*"},
	}
	for _, p := range e.procs() {
		t.Run(p.name, func(t *testing.T) {
			socks, err := hostile.Sockets(p.pid)
			if err != nil {
				t.Fatal(err)
			}
			udpPorts := hostileUDPPorts(socks)
			found := map[string]bool{}
			for _, s := range socks {
				key := fmt.Sprintf("%s:%d", s.Proto, s.Addr.Port())
				switch {
				case slices.Contains(want[p.name], key):
					found[key] = true
				case s.Proto == "udp" && slices.Contains(want[p.name], "udp:*"):
					found["udp:*"] = true // a QUIC socket: agent-udp (client, and server of the direct path), proxy-udp
				case s.Proto == "tcp" && udpPorts[s.Addr.Port()] && slices.Contains(want[p.name], hostilePeerTCP):
					found[hostilePeerTCP] = true // agent-peer-tcp: TCP on the port of the agent's UDP socket
				default:
					t.Errorf("%s holds %s, which the hostile suite does not attack: add it to the table in hostile_test.go", p.name, s)
				}
			}
			for _, k := range want[p.name] {
				if !found[k] {
					t.Errorf("%s does not hold %s, which the table says it does (it holds %v)", p.name, k, socks)
				}
			}
		})
	}
}

// hostilePeerTCP stands in the inventory for the agents' direct-path
// listener over TCP, whose port is that of the agent's UDP socket (random).
const hostilePeerTCP = "tcp:<the UDP socket's port>"

// hostileUDPPorts are the ports of the UDP sockets among socks.
func hostileUDPPorts(socks []hostile.Socket) map[uint16]bool {
	out := map[uint16]bool{}
	for _, s := range socks {
		if s.Proto == "udp" {
			out[s.Addr.Port()] = true
		}
	}
	return out
}

func hostilePort(t *testing.T, addr string) uint16 {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return ap.Port()
}

// udpTargets returns the UDP sockets of the named processes as addresses
// to send to.
func (e *hostileEnv) udpTargets(t *testing.T, names ...string) []string {
	var out []string
	for _, p := range e.procs() {
		if !slices.Contains(names, p.name) {
			continue
		}
		socks, err := hostile.Sockets(p.pid)
		if err != nil {
			t.Fatalf("sockets of %s: %v", p.name, err)
		}
		for _, s := range socks {
			if s.Proto == "udp" {
				out = append(out, fmt.Sprintf("127.0.0.1:%d", s.Addr.Port()))
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%v hold no UDP socket to attack", names)
	}
	return out
}

// peerTCPAddrs returns the addresses of the named agents' direct-path
// listeners over TCP: their listening TCP sockets on the port of one of
// their UDP sockets.
func (e *hostileEnv) peerTCPAddrs(names ...string) ([]string, error) {
	var out []string
	for _, p := range e.procs() {
		if !slices.Contains(names, p.name) {
			continue
		}
		socks, err := hostile.Sockets(p.pid)
		if err != nil {
			return nil, fmt.Errorf("sockets of %s: %w", p.name, err)
		}
		udpPorts := hostileUDPPorts(socks)
		for _, s := range socks {
			if s.Proto == "tcp" && udpPorts[s.Addr.Port()] {
				out = append(out, fmt.Sprintf("127.0.0.1:%d", s.Addr.Port()))
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%v hold no TCP socket on the port of their UDP socket (the direct path over TCP)", names)
	}
	return out, nil
}

// peerTCPTargets is peerTCPAddrs, failing t when there is none.
func (e *hostileEnv) peerTCPTargets(t *testing.T, names ...string) []string {
	t.Helper()
	out, err := e.peerTCPAddrs(names...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ---- clients ----

// jumpClient is an SSH connection to the jump host as u, from src.
func (e *hostileEnv) jumpClient(u *user, src string) (*ssh.Client, error) {
	key, err := os.ReadFile(filepath.Join(u.home, "key"))
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s's key: %w", u.name, err)
	}
	certText, err := os.ReadFile(filepath.Join(u.home, "key-cert.pub"))
	if err != nil {
		return nil, err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(certText)
	if err != nil {
		return nil, err
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("key-cert.pub is not a certificate")
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, err
	}
	c, err := hostile.TCPFrom(src, e.c.sshAddr, 10*time.Second)()
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: u.name, Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	sc, chans, reqs, err := ssh.NewClientConn(c, e.c.sshAddr, cfg)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("SSH to the jump host as %s: %w", u.name, err)
	}
	_ = c.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// userCert is u's client certificate from tunnel login.
func (e *hostileEnv) userCert(t *testing.T, u *user) *tls.Certificate {
	t.Helper()
	c, err := profile.Dir{Path: u.home}.TLSCertificate()
	if err != nil {
		t.Fatalf("%s's certificate: %v", u.name, err)
	}
	return &c
}

// quicDial connects to the gateway's QUIC listener from src with cert (nil:
// none) and alpn; close ends the connection and its transport.
func (e *hostileEnv) quicDial(src string, cert *tls.Certificate, alpn string, cfg *quic.Config) (*quic.Conn, func(), error) {
	return quicDialTo(src, e.c.addr, cert, alpn, cfg)
}

// quicDialTo is quicDial to any UDP address dst (an agent's socket).
func quicDialTo(src, dst string, cert *tls.Certificate, alpn string, cfg *quic.Config) (*quic.Conn, func(), error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		return nil, nil, err
	}
	tr := &quic.Transport{Conn: udp}
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		udp.Close()
		return nil, nil, err
	}
	tlsConf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}}
	if cert != nil {
		tlsConf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, raddr, tlsConf, cfg)
	closeAll := func() {
		if conn != nil {
			_ = conn.CloseWithError(0, "")
		}
		_ = tr.Close()
		_ = udp.Close()
	}
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return conn, closeAll, nil
}

// ---- descriptors ----

// checkFDs checks that each process's open descriptors come back near
// base (taken when restarts were as given) within wait. A process restarted
// since has no comparable count and is only logged.
func (e *hostileEnv) checkFDs(t *testing.T, base, restarts map[string]int, wait time.Duration) {
	for _, p := range e.procs() {
		t.Run(p.name, func(t *testing.T) {
			if p.exited {
				t.Fatalf("%s is not running", p.name)
			}
			e.mu.Lock()
			same := e.restarts[p.name] == restarts[p.name]
			e.mu.Unlock()
			b, ok := base[p.name]
			if !same || !ok {
				t.Logf("%s was restarted since the count to compare with: nothing to compare", p.name)
				return
			}
			deadline := time.Now().Add(wait)
			for {
				n, err := hostile.FDCount(p.pid)
				if err != nil {
					t.Fatal(err)
				}
				if n <= b+hostileFDSlack {
					t.Logf("%d descriptors open (before: %d)", n, b)
					return
				}
				if time.Now().After(deadline) {
					kinds, _ := hostile.FDKinds(p.pid)
					t.Errorf("%d descriptors open %s after the attacks; %d before: a leak (by kind: %v)", n, wait, b, kinds)
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
}

// snapshot returns the descriptors and restart counts now, for checkFDs.
func (e *hostileEnv) snapshot() (map[string]int, map[string]int) {
	fds := e.fdCounts()
	e.mu.Lock()
	defer e.mu.Unlock()
	return fds, maps.Clone(e.restarts)
}
