package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// TestMultiGateway runs three real gateways, each on its own loopback
// address, on one real PostgreSQL: init on the first, run on all three
// with its KEK copied. It shows that they list each other alive, that a
// lock made on gateway 3 cuts a user's stream relayed by gateway 2 (and
// measures how long that takes), that a SIGKILLed gateway is marked not
// alive while the others keep serving, and that a store outage refuses
// logins with "the gateway cannot reach its store" until the store is back,
// with no restart of the gateways.
func TestMultiGateway(t *testing.T) {
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)
	db := dbs.create(t)
	// The gateways reach PostgreSQL through a proxy the test can cut, to
	// take the store away and give it back under running gateways.
	px := newMGProxy(t, srv.Addr)
	url := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", srv.User, srv.Password, px.addr, db)

	gws := mgInit(t, url)
	c1, c2, c3 := gws[0], gws[1], gws[2]

	// A second init on the same store says what to do instead, with
	// or without an admin.
	dir := filepath.Join(t.TempDir(), "data")
	out, err := exec.Command(bin("tunnel-gateway"), "init", "--data-dir", dir, "--store", url,
		"--admin", "second", "--admin-password-file", writeSecret(t, "the second admin's password")).CombinedOutput()
	if want := `already holds cluster "itest": copy the KEK file from the first gateway`; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("init on an initialised store: %v\n%s\nwant %q", err, out, want)
	}
	out, err = exec.Command(bin("tunnel-gateway"), "init", "--data-dir", dir, "--store", url).CombinedOutput()
	if want := "do not run init: copy the KEK file from the first gateway"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("init on an initialised store without --admin: %v\n%s\nwant %q", err, out, want)
	}
	// A gateway whose KEK is not the cluster's says so.
	dir = filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command(bin("tunnel-gateway"), "init", "--data-dir", dir, "--admin", "stranger", "--admin-password-file", writeSecret(t, "a stranger's password")).CombinedOutput(); err != nil {
		t.Fatalf("init of another cluster: %v\n%s", err, out)
	}
	out, err = exec.Command(bin("tunnel-gateway"), "run", "--data-dir", dir, "--store", url, "--id", "stranger",
		"--api-addr", "127.0.0.1:0").CombinedOutput()
	if want := "does not open the cluster's keys: copy the KEK file from the first gateway"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("run with another cluster's KEK: %v\n%s\nwant %q", err, out, want)
	}

	admin1 := c1.adminUser()
	admin1.login()
	t.Run("GatewaysLs", func(t *testing.T) {
		waitFor(t, 30*time.Second, "3 gateways alive", func() bool {
			return slices.Equal(mgAlive(t, admin1), []string{"gw-1 alive", "gw-2 alive", "gw-3 alive"})
		})
		ls := admin1.must("admin", "gateways", "ls")
		for _, want := range []string{"gw-1", "127.0.0.11:", "127.0.0.12:", "127.0.0.13:"} {
			if !strings.Contains(ls, want) {
				t.Errorf("gateways ls does not show %q:\n%s", want, ls)
			}
		}
	})

	admin1.must("admin", "roles", "add", "ops", "--login", "ops", "--service", "web-1/echo", "--max-ttl", "2h")
	bob1 := addUser(t, admin1, "bob", "ops")
	bob1.login() // on gateway 1
	// Bob's stream goes through gateway 2, where the agent is connected.
	bob2 := c2.newUserHandle("bob", bob1.pw, bob1.otp)
	echo := serve(t, echoHandler)
	c2.startAgentAt("web-1", filepath.Join(t.TempDir(), "agent"), c2.addr, admin1.token("web-1"),
		"expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	admin3 := c3.newUserHandle(c3.admin, c3.adminPW, c3.adminOTP)
	admin3.login()

	t.Run("LockOnGateway3CutsStreamOnGateway2", func(t *testing.T) {
		const trials = 3
		var fromCmd, fromCommit []time.Duration
		for i := range trials {
			bob2.login()
			port := freeLoopbackPort(t)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			wait, _ := bob2.backgroundOut("proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
			dialRetry(t, addr, echoOnce, 30*time.Second)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := echoOnce(c); err != nil {
				t.Fatalf("trial %d: stream before the lock: %v", i, err)
			}
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			closed := make(chan time.Time, 1)
			go func() {
				_, _ = io.Copy(io.Discard, c)
				closed <- time.Now()
			}()
			start := time.Now()
			admin3.must("admin", "users", "lock", "bob")
			committed := time.Now()
			var end time.Time
			select {
			case end = <-closed:
			case <-time.After(60 * time.Second):
				t.Fatalf("trial %d: bob's stream through gateway 2 still open 60s after the lock on gateway 3", i)
			}
			c.Close()
			fromCmd = append(fromCmd, end.Sub(start))
			fromCommit = append(fromCommit, max(0, end.Sub(committed)))
			if code, out := wait(30 * time.Second); code == 0 && !strings.Contains(out, "revoked") {
				t.Logf("trial %d: tunnel proxy exited %d: %s", i, code, out)
			}
			admin3.must("admin", "users", "unlock", "bob")
		}
		t.Logf("revoke on gateway 3 -> stream on gateway 2 closed, %d trials: from the lock command p50 %s p99 %s; from its return p50 %s p99 %s",
			trials, mgPercentile(fromCmd, 50), mgPercentile(fromCmd, 99), mgPercentile(fromCommit, 50), mgPercentile(fromCommit, 99))
	})

	t.Run("SIGKILL", func(t *testing.T) {
		if err := c3.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-c3.done
		waitFor(t, 30*time.Second, "gw-3 marked not alive", func() bool {
			return slices.Equal(mgAlive(t, admin1), []string{"gw-1 alive", "gw-2 alive", "gw-3 dead"})
		})
		// The others keep serving: a stream through gateway 2 works.
		bob2.login()
		port := freeLoopbackPort(t)
		bob2.backgroundOut("proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
		dialRetry(t, fmt.Sprintf("127.0.0.1:%d", port), echoOnce, 30*time.Second)
	})

	t.Run("StoreOutage", func(t *testing.T) {
		px.down()
		carol := c1.newUserHandle("bob", bob1.pw, bob1.otp)
		args := []string{"login", "--gateway", c1.addr, "--ca-pin", c1.pin, "--user", "bob", "--password-file", carol.pwPath, "--otp", carol.otp.next(t)}
		_, se, err := carol.run(args...)
		if want := "the gateway cannot reach its store"; err == nil || !strings.Contains(se, want) {
			t.Errorf("login while the store is down: %v, stderr %q; want %q", err, se, want)
		}
		px.up()
		waitFor(t, 60*time.Second, "a login once the store is back", func() bool {
			args[len(args)-1] = carol.otp.next(t)
			_, _, err := carol.run(args...)
			return err == nil
		})
	})
	c1.stop()
	c2.stop()
}

// initSharedGateways initialises a cluster on the store at url in the
// first of n data directories and copies its KEK to the others: n
// gateways of one cluster, not started (each caller starts them with its
// own addresses and flags).
func initSharedGateways(t testing.TB, url string, n int) []*cluster {
	t.Helper()
	base := t.TempDir()
	first := &cluster{t: t, dataDir: filepath.Join(base, "gw1"), name: "itest", admin: "alice", adminPW: "correct horse battery staple"}
	pwFile := writeSecret(t, first.adminPW)
	out, err := exec.Command(bin("tunnel-gateway"), "init", "--data-dir", first.dataDir, "--store", url, "--cluster", first.name,
		"--admin", first.admin, "--admin-password-file", pwFile, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("tunnel-gateway init --store: %v\n%s", err, out)
	}
	var res struct {
		Pin   string `json:"ca_pin"`
		Admin struct {
			Secret string `json:"secret"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Pin == "" {
		t.Fatalf("init --json: %v\n%s", err, out)
	}
	kek, err := os.ReadFile(filepath.Join(first.dataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	otp := newOTPSource(res.Admin.Secret)
	var gws []*cluster
	for i := 1; i <= n; i++ {
		c := &cluster{t: t, dataDir: filepath.Join(base, fmt.Sprintf("gw%d", i)), name: first.name, pin: res.Pin,
			admin: first.admin, adminPW: first.adminPW, adminOTP: otp}
		if i > 1 {
			if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(c.dataDir, "kek"), kek, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		gws = append(gws, c)
	}
	return gws
}

// startSharedGateways runs n gateways of one cluster on the store at url,
// on 127.0.0.11, .12, ..., with extra run flags.
func startSharedGateways(t testing.TB, url string, n int, extra ...string) []*cluster {
	t.Helper()
	gws := initSharedGateways(t, url, n)
	for i, c := range gws {
		ip := fmt.Sprintf("127.0.0.1%d", i+1)
		c.start(append([]string{"--store", url, "--id", fmt.Sprintf("gw-%d", i+1), "--api-addr", ip + ":0", "--name", ip}, extra...)...)
	}
	return gws
}

// mgInit runs the three gateways of TestMultiGateway, with a 1 s
// heartbeat.
func mgInit(t *testing.T, url string) []*cluster {
	t.Helper()
	return startSharedGateways(t, url, 3, "--heartbeat-interval", "1s", "--reconcile-interval", "5s", "--login-burst", "1000")
}

// mgAlive lists the gateways as "ID alive" or "ID dead", by id.
func mgAlive(t *testing.T, admin *user) []string {
	t.Helper()
	var gws []struct {
		ID    string `json:"id"`
		Alive bool   `json:"alive"`
	}
	if err := json.Unmarshal([]byte(admin.must("admin", "gateways", "ls", "--json")), &gws); err != nil {
		t.Fatalf("gateways ls --json: %v", err)
	}
	var out []string
	for _, g := range gws {
		state := "dead"
		if g.Alive {
			state = "alive"
		}
		out = append(out, g.ID+" "+state)
	}
	return out
}

func mgPercentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

// mgProxy forwards TCP connections to a target until down, which closes
// its listener and every connection; up listens again on the same address.
type mgProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newMGProxy(t *testing.T, target string) *mgProxy {
	p := &mgProxy{t: t, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.down()
		p.wg.Wait()
	})
	return p
}

func (p *mgProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *mgProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *mgProxy) pipe(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	if !p.track(c) || !p.track(u) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// down refuses new connections and cuts the open ones.
func (p *mgProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// up listens again on the same address.
func (p *mgProxy) up() {
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", p.addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy up again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}
