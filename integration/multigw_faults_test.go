package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// The fault tests of issue 8 §4: three real gateways, each on its own
// loopback address with its own SSH jump host, on one real PostgreSQL; a
// real agent (web-1) connected to all three, exposing an echo service and
// its SSH endpoint; and through EACH gateway, for a user whose gateway list
// starts with it, three continuous exchanges whose every byte is checked
// (mgfFlow): a tunnel proxy db stream to the echo, a tunnel ssh session
// running cat, and a stock OpenSSH session (ssh -J through that gateway's
// jump host) running cat.

// mgfEnv is that cluster.
type mgfEnv struct {
	t     *testing.T
	srv   *pgtest.Server
	gws   []*cluster
	ips   []string
	admin *user   // logged in to gateway 1 only
	users []*user // users[i] (u1, u2, u3) logged in with the list starting at gws[i]
	login string  // the OS user, the SSH login on web-1
	echo  *testServer
	web   *agentProc
}

func newMGFEnv(t *testing.T) *mgfEnv {
	t.Helper()
	mgaNeedStore(t)
	testenv.LookPath(t, "ssh")
	e := &mgfEnv{t: t, login: testenv.CurrentUser(t)}
	e.srv = pgtest.Start(t)
	url := e.srv.URL("")
	e.gws = initSharedGateways(t, url, 3)
	for i, c := range e.gws {
		ip := fmt.Sprintf("127.0.0.1%d", i+1)
		e.ips = append(e.ips, ip)
		c.start("--store", url, "--id", fmt.Sprintf("gw-%d", i+1), "--api-addr", ip+":0", "--name", ip,
			"--ssh-addr", ip+":0", "--heartbeat-interval", "1s", "--reconcile-interval", "5s", "--login-burst", "1000")
	}
	e.admin = e.gws[0].adminUser()
	e.admin.login()
	e.admin.must("admin", "roles", "add", "ops", "--login", e.login, "--node", "web-*", "--service", "web-1/echo", "--max-ttl", "2h")
	for i := range e.gws {
		u := addUser(t, e.admin, fmt.Sprintf("u%d", i+1), "ops")
		u.c = e.gws[i]
		u.must("login", "--gateway", e.list(i), "--ca-pin", u.c.pin, "--user", u.name, "--password-file", u.pwPath, "--otp", u.otp.next(t))
		e.users = append(e.users, u)
	}
	e.echo = serve(t, echoHandler)
	e.web = e.startAgent("web-1", e.list(0), "expose:\n  - {name: echo, address: "+e.echo.addr()+"}\n")
	return e
}

// list is every gateway's address, starting with gws[first].
func (e *mgfEnv) list(first int) string {
	var addrs []string
	for k := range e.gws {
		addrs = append(addrs, e.gws[(first+k)%len(e.gws)].addr)
	}
	return strings.Join(addrs, ",")
}

// startAgent enrols and runs an agent with the gateway list, and waits
// until it says it is connected to every live gateway of the list.
func (e *mgfEnv) startAgent(name, list, yaml string) *agentProc {
	t := e.t
	t.Helper()
	a := e.gws[0].startAgentAt(name, filepath.Join(t.TempDir(), "data"), list, e.admin.token(name), yaml)
	for _, g := range e.gws {
		waitFor(t, 60*time.Second, "agent "+name+" connected to "+g.addr, func() bool {
			return strings.Contains(a.log.String(), "connected to gateway "+g.addr+"\n")
		})
	}
	return a
}

// sshConfig writes u's OpenSSH configuration: the key and certificate of
// u's tunnel login, the cluster's host CA, nothing from the machine.
func (e *mgfEnv) sshConfig(u *user) string {
	cfg := filepath.Join(e.t.TempDir(), "ssh_config")
	text := fmt.Sprintf(`Host *
    IdentityFile %s
    CertificateFile %s
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile %s
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 10
`, filepath.Join(u.home, "key"), filepath.Join(u.home, "key-cert.pub"), filepath.Join(u.home, "known_hosts"))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// jump is the -J argument for u through gateway i's jump host.
func (e *mgfEnv) jump(u *user, i int) string { return u.name + "@" + e.gws[i].sshAddr }

// mgfCLIEnv is the environment of the tunnel CLI run as u.
func mgfCLIEnv(u *user) []string { return append(cleanEnv(), "TUNNEL_HOME="+u.home) }

// mgfRoute is what goes through one gateway: a tunnel proxy db process
// with a flow over it, a tunnel ssh session and an OpenSSH session, each
// with a flow.
type mgfRoute struct {
	gw        int
	u         *user
	proxy     *mgfProc
	proxyAddr string
	flows     []*mgfFlow
	sessions  []*mgfProc // tunnel ssh, ssh -J
}

// openRoute opens the exchanges of users[i], through gateway i.
func (e *mgfEnv) openRoute(i int) *mgfRoute {
	t := e.t
	t.Helper()
	u := e.users[i]
	r := &mgfRoute{gw: i, u: u}
	port := freeLoopbackPort(t)
	r.proxyAddr = fmt.Sprintf("127.0.0.1:%d", port)
	r.proxy, _, _ = mgfStart(t, u.name+" tunnel proxy db", mgfCLIEnv(u), false, bin("tunnel"), "proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
	dialRetry(t, r.proxyAddr, echoOnce, 60*time.Second)
	r.flows = append(r.flows, mgfTCPFlow(t, fmt.Sprintf("gw%d-proxy", i+1), r.proxyAddr))

	p, in, out := mgfStart(t, u.name+" tunnel ssh", mgfCLIEnv(u), true, bin("tunnel"), "ssh", e.login+"@web-1", "cat")
	r.sessions = append(r.sessions, p)
	r.flows = append(r.flows, newMGFFlow(t, fmt.Sprintf("gw%d-tunnel-ssh", i+1), in, out, in.Close, p.kill))

	p, in, out = mgfStart(t, u.name+" ssh -J", cleanEnv(), true, "ssh", "-F", e.sshConfig(u), "-J", e.jump(u, i), e.login+"@web-1", "cat")
	r.sessions = append(r.sessions, p)
	r.flows = append(r.flows, newMGFFlow(t, fmt.Sprintf("gw%d-openssh", i+1), in, out, in.Close, p.kill))
	return r
}

// waitFlowing waits until every flow of r has echoed lines.
func (e *mgfEnv) waitFlowing(r *mgfRoute) {
	e.t.Helper()
	for _, f := range r.flows {
		waitFor(e.t, 60*time.Second, f.name+" to echo its first lines", func() bool {
			if err := f.Err(); err != nil {
				e.t.Fatalf("%s failed before the fault: %v\n%s", f.name, err, e.routeOutput(r))
			}
			return f.got.Load() >= 5
		})
	}
}

// finishRoute ends every flow of r and checks that every line came back
// and that the sessions ended cleanly with their input.
func (e *mgfEnv) finishRoute(r *mgfRoute, when string) {
	t := e.t
	t.Helper()
	for _, f := range r.flows {
		n, err := f.finish(60 * time.Second)
		if err != nil {
			t.Errorf("gateway %d, %s: %v\n%s", r.gw+1, when, err, e.routeOutput(r))
			continue
		}
		t.Logf("%s: %d lines (%d bytes) each way, none lost", f.name, n, f.gotBytes.Load())
	}
	for _, p := range r.sessions {
		if code := p.wait(30 * time.Second); code != 0 {
			t.Errorf("gateway %d, %s: %s exited %d once its input ended; want 0\n%s", r.gw+1, when, p.name, code, mgfTail(p.out.String()))
		}
	}
}

func (e *mgfEnv) routeOutput(r *mgfRoute) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s ---\n%s\n", r.proxy.name, mgfTail(r.proxy.out.String()))
	for _, p := range r.sessions {
		fmt.Fprintf(&b, "--- %s ---\n%s\n", p.name, mgfTail(p.out.String()))
	}
	return b.String()
}

// tunnelSSH runs a new tunnel ssh session as u printing word.
func tunnelSSH(u *user, login, word string) error {
	so, se, err := u.run("ssh", login+"@web-1", "echo", word)
	if err != nil || strings.TrimSpace(so) != word {
		return fmt.Errorf("tunnel ssh as %s: %v, stdout %q, stderr %q", u.name, err, so, se)
	}
	return nil
}

// openSSH runs a new OpenSSH session as u through gateway i's jump host
// printing word.
func (e *mgfEnv) openSSH(u *user, i int, word string) error {
	code, out := jhRun(e.t, "ssh", "-F", e.sshConfig(u), "-J", e.jump(u, i), e.login+"@web-1", "echo "+word)
	if code != 0 || !strings.Contains(out, word) {
		return fmt.Errorf("ssh -J %s: exit %d, output %q", e.jump(u, i), code, out)
	}
	return nil
}

// TestMultiGatewaySIGKILL: with exchanges running through all three
// gateways, gateway 3 is SIGKILLed. The exchanges through gateways 1 and 2
// go on without losing a byte (every line checked, kept going well past
// the kill, then drained to the last line); those through gateway 3 stop;
// the clients whose gateway list starts with gateway 3 (a running tunnel
// proxy db, a new tunnel ssh, a new tunnel login) and an agent whose list
// starts with it get through another gateway within a generous deadline
// (the times are logged); the agent stays reachable through gateways 1 and
// 2; new logins and sessions succeed there; gateways ls marks gw-3 dead.
func TestMultiGatewaySIGKILL(t *testing.T) {
	e := newMGFEnv(t)
	// app-1 sends its streams through gateway 3 first (or asks it for
	// each, when the agents reach each other directly): an agent "on" the
	// gateway that dies.
	appAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/echo")
	app := e.startAgent("app-1", e.list(2), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: web-1/echo}\n", appAddr))
	dialRetry(t, appAddr, echoOnce, 60*time.Second)

	var routes []*mgfRoute
	for i := range e.gws {
		routes = append(routes, e.openRoute(i))
	}
	appFlow := mgfTCPFlow(t, "app-1-to-web-1", appAddr)
	for _, r := range routes {
		e.waitFlowing(r)
	}
	waitFor(t, 60*time.Second, "app-1's flow to echo", func() bool { return appFlow.got.Load() >= 5 })

	// SIGKILL gateway 3: no goodbye to anyone.
	gw3 := e.gws[2]
	if err := gw3.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-gw3.done
	killed := time.Now()
	gotAtKill := map[*mgfFlow]int64{}
	for _, r := range routes {
		for _, f := range r.flows {
			gotAtKill[f] = f.got.Load()
		}
	}

	// The clients of gateway 3 get through another one; measured from the
	// kill, all at once.
	u3 := e.users[2]
	type result struct {
		what string
		took time.Duration
		err  error
	}
	var wg sync.WaitGroup
	results := make([]result, 5)
	measure := func(k int, what string, try func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := mgfRetry(killed, 90*time.Second, try)
			results[k] = result{what, took, err}
		}()
	}
	measure(0, "a new connection through u3's running tunnel proxy db (list gw3,gw1,gw2)", func() error { return mgfEcho(routes[2].proxyAddr) })
	measure(1, "a new connection through agent app-1 (list gw3,gw1,gw2)", func() error { return mgfEcho(appAddr) })
	measure(2, "a new tunnel ssh session of u3 (list gw3,gw1,gw2)", func() error { return tunnelSSH(u3, e.login, "after-the-kill") })
	// The login runs in a home of its own: it must not rewrite the key
	// that the tunnel ssh above is reading.
	u3b := e.gws[2].newUserHandle(u3.name, u3.pw, u3.otp)
	measure(3, "a new tunnel login of u3 (list gw3,gw1,gw2)", func() error {
		_, se, err := u3b.run("login", "--gateway", e.list(2), "--ca-pin", u3.c.pin, "--user", u3.name,
			"--password-file", u3b.pwPath, "--otp", u3.otp.next(t))
		if err != nil {
			return fmt.Errorf("%v: %s", err, se)
		}
		return nil
	})
	// Once the proxy's connection to gateway 3 has heard nothing for a
	// while (transport.Silence: by 5.25 s after the kill), a new
	// connection goes through another gateway at once rather than into
	// that connection until its idle timeout (8-10 s after the kill).
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(time.Until(killed.Add(7 * time.Second)))
		took, err := mgfRetry(time.Now(), 90*time.Second, func() error { return mgfEcho(routes[2].proxyAddr) })
		results[4] = result{"7 s later, a new connection through u3's running tunnel proxy db (its connection to gw3 quiet)", took, err}
	}()
	wg.Wait()
	for _, r := range results {
		if r.err != nil {
			t.Errorf("after the SIGKILL of gateway 3, %s: %v", r.what, r.err)
			continue
		}
		t.Logf("SIGKILL of gateway 3 -> %s worked after %s", r.what, r.took.Round(time.Millisecond))
	}
	if t.Failed() {
		t.Fatalf("the clients of gateway 3 did not fail over\n%s\n--- app-1 ---\n%s", e.routeOutput(routes[2]), mgfTail(app.log.String()))
	}

	// The exchanges through gateways 1 and 2 kept flowing all along (they
	// are checked line by line; here: still advancing now, long after the
	// kill); those through gateway 3 are gone, so they went through it.
	for _, r := range routes[:2] {
		for _, f := range r.flows {
			if err := f.Err(); err != nil {
				t.Errorf("%s broke after the SIGKILL of gateway 3: %v\n%s", f.name, err, e.routeOutput(r))
			} else if f.got.Load() <= gotAtKill[f] || !f.advancing(30*time.Second) {
				t.Errorf("%s stopped after the SIGKILL of gateway 3 (%d lines at the kill, %d now)\n%s", f.name, gotAtKill[f], f.got.Load(), e.routeOutput(r))
			}
		}
	}
	for _, f := range routes[2].flows {
		if f.Err() == nil && f.advancing(3*time.Second) {
			t.Errorf("%s still echoes after the SIGKILL of gateway 3: it did not go through gateway 3", f.name)
		}
	}
	// app-1's stream to web-1 went through gateway 3, and ended with it,
	// unless the agents carry it directly (the gateway only decides): then
	// it must go on without a byte lost.
	appDirect := appFlow.Err() == nil && appFlow.advancing(3*time.Second)
	if appDirect {
		t.Logf("%s goes on after the SIGKILL of gateway 3: the agents carry it directly", appFlow.name)
	} else {
		t.Logf("%s ended with gateway 3 (relayed through it): %v", appFlow.name, appFlow.Err())
	}

	// gateways ls, from a survivor.
	waitFor(t, 60*time.Second, "gw-3 marked dead by gateways ls", func() bool {
		return slices.Equal(mgAlive(t, e.admin), []string{"gw-1 alive", "gw-2 alive", "gw-3 dead"})
	})
	t.Logf("gateways ls marks gw-3 dead (checked %s after the kill)", time.Since(killed).Round(time.Millisecond))

	// New logins, sessions and streams on the survivors: the agent is
	// reachable through its connections to gateways 1 and 2.
	admin2 := e.gws[1].adminUser()
	admin2.login()
	if !admin2.agentsOnline()["web-1"] {
		t.Errorf("agents ls through gateway 2 does not show web-1 online:\n%s", admin2.must("admin", "agents", "ls"))
	}
	u1, u2 := e.users[0], e.users[1]
	u1.must("login", "--gateway", e.list(0), "--ca-pin", u1.c.pin, "--user", u1.name, "--password-file", u1.pwPath, "--otp", u1.otp.next(t))
	for _, check := range []func() error{
		func() error { return mgfEcho(routes[0].proxyAddr) },
		func() error { return mgfEcho(routes[1].proxyAddr) },
		func() error { return tunnelSSH(u1, e.login, "new-on-gw1") },
		func() error { return e.openSSH(u1, 0, "new-via-gw1-jump") },
		func() error { return e.openSSH(u2, 1, "new-via-gw2-jump") },
	} {
		if err := check(); err != nil {
			t.Errorf("a new connection on a surviving gateway: %v", err)
		}
	}

	// Drain the surviving exchanges to their last line.
	for _, r := range routes[:2] {
		e.finishRoute(r, "across the SIGKILL of gateway 3")
	}
	if appDirect {
		if n, err := appFlow.finish(60 * time.Second); err != nil {
			t.Errorf("app-1's direct stream across the SIGKILL of gateway 3: %v", err)
		} else {
			t.Logf("%s: %d lines (%d bytes) each way, none lost", appFlow.name, n, appFlow.gotBytes.Load())
		}
	}
	t.Logf("the exchanges through gateways 1 and 2 ran %s past the SIGKILL of gateway 3", time.Since(killed).Round(time.Second))
}

// TestMultiGatewayStoreRestart: PostgreSQL itself is stopped and started
// again on the same port and data directory, under three running
// gateways. While it is down, the live exchanges through every gateway go
// on byte for byte; a login and a new SSH session are refused on each
// gateway with "the gateway cannot reach its store", and so is a new
// stream. Once it is back, each gateway serves a login by itself (no
// restart; the time is logged), the audit chain verifies, and the log
// holds exactly one event for every login and session that succeeded,
// none for those refused.
func TestMultiGatewayStoreRestart(t *testing.T) {
	e := newMGFEnv(t)
	const storeDown = "the gateway cannot reach its store"
	logins := map[string]int{}   // successful logins, by user
	sessions := map[string]int{} // successful SSH sessions, by user
	for _, u := range e.users {
		logins[u.name]++
	}

	var routes []*mgfRoute
	for i := range e.gws {
		routes = append(routes, e.openRoute(i))
		sessions[e.users[i].name] += 2 // tunnel ssh and ssh -J
	}
	for _, r := range routes {
		e.waitFlowing(r)
	}
	gotAtStop := map[*mgfFlow]int64{}
	for _, r := range routes {
		for _, f := range r.flows {
			gotAtStop[f] = f.got.Load()
		}
	}

	e.srv.Stop()
	stopped := time.Now()

	// Refusals, on every gateway, with the words that say why. Each login
	// uses a code the gateway has not seen; as nothing could be recorded,
	// it is still unspent for the first login once the store is back.
	codes := make([]string, len(e.users))
	codeTimes := make([]time.Time, len(e.users))
	for i, u := range e.users {
		codes[i], codeTimes[i] = u.otp.next(t), time.Now()
		args := []string{"login", "--gateway", e.gws[i].addr, "--ca-pin", u.c.pin, "--user", u.name, "--password-file", u.pwPath, "--otp", codes[i]}
		if _, se, err := u.run(args...); err == nil || !strings.Contains(se, storeDown) {
			t.Errorf("login on gateway %d with the store down: %v, stderr %q; want a refusal saying %q", i+1, err, se, storeDown)
		}
		if so, se, err := u.run("ssh", e.login+"@web-1", "echo", "while-down"); err == nil || strings.Contains(so, "while-down") || !strings.Contains(se, storeDown) {
			t.Errorf("a new tunnel ssh session (list from gateway %d) with the store down: %v, stdout %q, stderr %q; want a refusal saying %q", i+1, err, so, se, storeDown)
		}
	}
	// A new ssh -J session and a new stream are new decisions too: refused,
	// and told why.
	jumpErr := e.openSSH(e.users[1], 1, "while-down")
	if jumpErr == nil {
		t.Errorf("a new ssh -J session through gateway 2 worked with the store down: no decision may be made without the store")
	}
	streamErr := mgfEcho(routes[0].proxyAddr)
	if streamErr == nil {
		t.Errorf("a new stream through gateway 1 worked with the store down: no decision may be made without the store")
	}
	var refusal string // what tunnel proxy db says about the refused stream
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out := routes[0].proxy.out.String()
		if i := strings.Index(out, "connection refused"); i >= 0 {
			refusal = out[i:]
			break
		}
	}
	t.Logf("with the store down: ssh -J through gateway 2: %v; a new stream through gateway 1: %v; tunnel proxy db said: %q", jumpErr, streamErr, refusal)
	t.Run("StreamRefusalSaysStore", func(t *testing.T) {
		if !strings.Contains(refusal, storeDown) {
			t.Errorf("tunnel proxy db on a stream refused with the store down said %q; want %q", refusal, storeDown)
		}
	})
	t.Run("JumpHostRefusalSaysStore", func(t *testing.T) {
		if jumpErr == nil || !strings.Contains(jumpErr.Error(), storeDown) {
			t.Errorf("ssh -J with the store down: %v; want a refusal saying %q", jumpErr, storeDown)
		}
	})
	// Keep the store down past a few heartbeats (1 s) and reconciliation
	// sweeps (5 s): what runs in the background must not cut live
	// exchanges because it cannot reach the store either.
	time.Sleep(time.Until(stopped.Add(12 * time.Second)))
	// The live exchanges went on, and go on.
	for _, r := range routes {
		for _, f := range r.flows {
			if err := f.Err(); err != nil {
				t.Errorf("%s broke while the store was down: %v\n%s", f.name, err, e.routeOutput(r))
			} else if f.got.Load() <= gotAtStop[f] || !f.advancing(30*time.Second) {
				t.Errorf("%s stopped while the store was down (%d lines at the stop, %d now)\n%s", f.name, gotAtStop[f], f.got.Load(), e.routeOutput(r))
			}
		}
	}
	t.Logf("the store was down for %s", time.Since(stopped).Round(time.Millisecond))

	e.srv.StartAgain(t)
	started := time.Now()

	// Each gateway serves a login again by itself (one user per gateway,
	// all at once, measured from the restart).
	var wg sync.WaitGroup
	took := make([]time.Duration, len(e.gws))
	errs := make([]error, len(e.gws))
	for i, u := range e.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[i], errs[i] = e.loginWhenBack(u, i, started, codes[i], codeTimes[i])
		}()
	}
	wg.Wait()
	for i := range e.gws {
		if errs[i] != nil {
			t.Errorf("gateway %d after the store came back: %v\n%s", i+1, errs[i], mgfTail(e.gws[i].log.String()))
			continue
		}
		logins[e.users[i].name]++
		t.Logf("PostgreSQL restart -> gateway %d served a login again %s after the store was back", i+1, took[i].Round(time.Millisecond))
	}
	if t.Failed() {
		t.FailNow()
	}
	// New sessions and streams through every gateway again (each user's
	// profile now names only its gateway, from the login above).
	for i, u := range e.users {
		if err := tunnelSSH(u, e.login, fmt.Sprintf("back-on-gw%d", i+1)); err != nil {
			t.Errorf("gateway %d after the store came back: %v", i+1, err)
		} else {
			sessions[u.name]++
		}
	}
	if err := e.openSSH(e.users[1], 1, "back-via-gw2-jump"); err != nil {
		t.Errorf("gateway 2 after the store came back: %v", err)
	} else {
		sessions[e.users[1].name]++
	}
	for _, r := range routes {
		if err := mgfEcho(r.proxyAddr); err != nil {
			t.Errorf("a new stream through gateway %d after the store came back: %v\n%s", r.gw+1, err, mgfTail(r.proxy.out.String()))
		}
	}
	for _, r := range routes {
		e.finishRoute(r, "across the PostgreSQL restart")
	}

	// The audit log. Every session ended above: wait until the gateways
	// have recorded that, so that nothing appends while verify reads (it
	// reads the head and the log in two statements: an event appended in
	// between reads as a broken chain).
	var ids map[string]string // session id -> user, of u1..u3
	waitFor(t, 60*time.Second, "every session of u1..u3 to be recorded as ended", func() bool {
		var list []struct {
			ID    string `json:"id"`
			User  string `json:"user"`
			State string `json:"state"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "sessions", "ls", "--json")), &list); err != nil {
			t.Fatalf("sessions ls --json: %v", err)
		}
		ids = map[string]string{}
		for _, s := range list {
			if _, ok := sessions[s.User]; !ok {
				continue
			}
			if s.State == "active" {
				return false
			}
			ids[s.ID] = s.User
		}
		return true
	})
	if so, se, err := e.admin.run("admin", "audit", "verify"); err != nil || !strings.Contains(so, "Audit log intact") {
		t.Errorf("audit verify after the PostgreSQL restart: %v\n%s%s", err, so, se)
	}
	var evs []audit.Event
	if err := json.Unmarshal([]byte(e.admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatalf("audit ls --json: %v", err)
	}
	// One login.success for each login that succeeded, none for those
	// refused; for each session that succeeded, its session.created and,
	// as it has ended, its session.ended.
	gotLogins, listed := map[string]int{}, map[string]int{}
	created, ended := map[string]int{}, map[string]int{}
	for _, ev := range evs {
		switch {
		case ev.Type == audit.LoginSuccess && ev.Outcome == audit.Success:
			gotLogins[ev.Actor]++
		case ev.Type == audit.SessionCreated && ev.Outcome == audit.Success:
			created[ev.Subject]++
			if ids[ev.Subject] == "" && sessions[ev.Actor] > 0 {
				t.Errorf("%s of %s for a session sessions ls does not know: %+v", ev.Type, ev.Actor, ev)
			}
		case ev.Type == audit.SessionEnded || ev.Type == audit.SessionRevoked:
			ended[ev.Subject]++
		}
	}
	for _, user := range ids {
		listed[user]++
	}
	for _, u := range e.users {
		if gotLogins[u.name] != logins[u.name] {
			t.Errorf("%s: %d %s events; %d logins succeeded", u.name, gotLogins[u.name], audit.LoginSuccess, logins[u.name])
		}
		if listed[u.name] != sessions[u.name] {
			t.Errorf("%s: %d sessions listed; %d SSH sessions succeeded", u.name, listed[u.name], sessions[u.name])
		}
	}
	for id, user := range ids {
		if created[id] != 1 || ended[id] != 1 {
			t.Errorf("session %s of %s: %d %s and %d %s events; want one of each", id, user, created[id], audit.SessionCreated, ended[id], audit.SessionEnded)
		}
	}
	if t.Failed() {
		t.Logf("audit log:\n%s", e.admin.must("admin", "audit", "ls"))
		return
	}
	for _, u := range e.users {
		t.Logf("%s: %d logins and %d SSH sessions succeeded across the restart, each with its audit events", u.name, logins[u.name], sessions[u.name])
	}
}

// loginWhenBack logs u in on gateway i alone until it works (the store
// coming back), and returns how long that took from since. It starts with
// code, from issued, an unspent code: a code is reused while the gateway
// answers it cannot reach its store (nothing was recorded, so the code is
// not spent), and replaced when it gets old or is refused for another
// reason.
func (e *mgfEnv) loginWhenBack(u *user, i int, since time.Time, code string, issued time.Time) (time.Duration, error) {
	return mgfRetry(since, 120*time.Second, func() error {
		_, se, err := u.run("login", "--gateway", e.gws[i].addr, "--ca-pin", u.c.pin, "--user", u.name,
			"--password-file", u.pwPath, "--otp", code)
		if err == nil {
			return nil
		}
		if !strings.Contains(se, "cannot reach its store") || time.Since(issued) > 20*time.Second {
			code, issued = u.otp.next(e.t), time.Now()
		}
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(se))
	})
}
