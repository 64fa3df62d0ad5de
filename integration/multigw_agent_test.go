package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// TestMultiGatewayAgentAndClients runs two real gateways on one real
// PostgreSQL and shows the agent and client side of issue 8: an agent
// given both keeps a connection to each (online on both); after gateway 1
// is SIGKILLed a stream that went through gateway 2 keeps flowing, an
// agent that sent its streams through gateway 1 sends new ones through
// gateway 2, tunnel login with both logs in through gateway 2, tunnel
// proxy db carries new connections through gateway 2; once gateway 1 is
// back, every agent connects to it again.
func TestMultiGatewayAgentAndClients(t *testing.T) {
	mgaNeedStore(t)
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)
	url := dbs.url(dbs.create(t))
	g1, g2 := mgaTwoGateways(t, url)
	both := g1.addr + "," + g2.addr

	admin1 := g1.adminUser()
	admin1.login()
	admin2 := g2.adminUser()
	admin2.login()

	echo := serve(t, echoHandler)
	dbYAML := fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n", echo.addr())
	db := mgaStartAgent(t, g1, "db-1", both, admin1.token("db-1"), dbYAML)
	// app-a prefers gateway 2, app-b gateway 1 (the list order).
	aAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	bAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	appA := mgaStartAgent(t, g1, "app-a", g2.addr+","+g1.addr, admin1.token("app-a"),
		fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: db-1/echo}\n", aAddr))
	appB := mgaStartAgent(t, g1, "app-b", both, admin1.token("app-b"),
		fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: db-1/echo}\n", bAddr))
	for _, from := range []string{"app-a", "app-b"} {
		admin1.must("admin", "policy", "allow", "--from", from, "--to", "db-1/echo")
	}
	// Online on both gateways, and each said so for each gateway.
	for _, admin := range []*user{admin1, admin2} {
		for _, name := range []string{"db-1", "app-a", "app-b"} {
			admin.waitOnline(name, true, 30*time.Second)
		}
	}
	for _, a := range []*agentProc{db, appA, appB} {
		for _, g := range []*cluster{g1, g2} {
			if !strings.Contains(a.log.String(), "connected to gateway "+g.addr+"\n") {
				t.Errorf("agent %s does not say it is connected to %s:\n%s", a.name, g.addr, a.log.String())
			}
		}
	}
	dialRetry(t, aAddr, echoOnce, 30*time.Second)
	dialRetry(t, bAddr, echoOnce, 30*time.Second)

	// bob reaches db-1/echo with tunnel proxy db, logged in to both.
	admin1.must("admin", "roles", "add", "dba", "--service", "db-1/echo")
	bob := addUser(t, admin1, "bob", "dba")
	bob.must("login", "--gateway", both, "--ca-pin", g1.pin, "--user", "bob", "--password-file", bob.pwPath, "--otp", bob.otp.next(t))
	pAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	_, proxyOut := bob.backgroundOut("proxy", "db", "db-1/echo", "--port", strings.TrimPrefix(pAddr, "127.0.0.1:"))
	dialRetry(t, pAddr, echoOnce, 30*time.Second)

	// A connection through app-a, so through gateway 2, open across the
	// death of gateway 1.
	existing, err := net.DialTimeout("tcp", aAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer existing.Close()
	if err := echoOnce(existing); err != nil {
		t.Fatalf("echo through app-a: %v", err)
	}

	if err := g1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g1.done

	if err := echoOnce(existing); err != nil {
		t.Errorf("the connection through gateway 2 did not survive the death of gateway 1: %v", err)
	}
	// New connections: through gateway 2, for the agent that used gateway
	// 1 and for tunnel proxy (its connection to gateway 1 has to be found
	// dead first: generous deadlines).
	dialRetry(t, bAddr, echoOnce, 90*time.Second)
	dialRetry(t, aAddr, echoOnce, 30*time.Second)
	dialRetry(t, pAddr, echoOnce, 90*time.Second)
	if strings.Contains(proxyOut(), "level=ERROR") {
		t.Errorf("tunnel proxy logged errors:\n%s", proxyOut())
	}

	// Login with gateway 1 down goes through gateway 2, and later commands
	// use the list too.
	out := bob.must("login", "--gateway", both, "--password-file", bob.pwPath, "--otp", bob.otp.next(t))
	if !strings.Contains(out, "Logged in to itest as bob") {
		t.Errorf("login with gateway 1 down said %q", out)
	}
	if out := bob.must("ls"); !strings.Contains(out, "db-1") {
		t.Errorf("tunnel ls with gateway 1 down:\n%s\nwant db-1", out)
	}
	var st struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(bob.must("status", "--json")), &st); err != nil || st.Gateway != both {
		t.Errorf("status --json: gateway %q, %v; want the list %q", st.Gateway, err, both)
	}

	// Gateway 1 comes back on its address: every agent connects to it.
	g1.start(mgaRunFlags(url, 1, g1.addr)...)
	for _, a := range []*agentProc{db, appA, appB} {
		deadline := time.Now().Add(90 * time.Second)
		for strings.Count(a.log.String(), "connected to gateway "+g1.addr+"\n") < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("agent %s did not reconnect to the restarted gateway 1:\n%s", a.name, a.log.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	admin1.waitOnline("db-1", true, 30*time.Second)
}

// mgaNeedStore skips when the gateway has no --store (PostgreSQL).
func mgaNeedStore(t *testing.T) {
	t.Helper()
	out, _ := exec.Command(bin("tunnel-gateway"), "run", "--help").CombinedOutput()
	if !strings.Contains(string(out), "--store string") {
		t.Skip("tunnel-gateway run has no --store flag yet: several gateways need a shared PostgreSQL store")
	}
}

// mgaRunFlags are the run flags of gateway i (1-based) on addr.
func mgaRunFlags(url string, i int, addr string) []string {
	host, _, _ := net.SplitHostPort(addr)
	return []string{"--store", url, "--id", fmt.Sprintf("gw-%d", i), "--api-addr", addr, "--name", host,
		"--heartbeat-interval", "1s", "--reconcile-interval", "5s", "--login-burst", "1000"}
}

// mgaTwoGateways initialises a cluster on the store at url and runs two
// gateways, on 127.0.0.21 and 127.0.0.22, each on a port free for TCP and
// UDP (fixed, so a gateway restarts on the same address).
func mgaTwoGateways(t *testing.T, url string) (*cluster, *cluster) {
	t.Helper()
	gws := initSharedGateways(t, url, 2)
	for i, c := range gws {
		i++
		addr := mgaFreeAddr(t, fmt.Sprintf("127.0.0.2%d", i))
		c.start(mgaRunFlags(url, i, addr)...)
		if c.addr != addr {
			t.Fatalf("gateway %d listens on %s; want %s", i, c.addr, addr)
		}
	}
	return gws[0], gws[1]
}

// mgaFreeAddr returns ip:port with the port free on both TCP and UDP.
func mgaFreeAddr(t *testing.T, ip string) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", ip+":0")
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
	t.Fatalf("no port free on both TCP and UDP on %s", ip)
	return ""
}

// mgaStartAgent runs an agent with --gateway gateways (a list), enrolled
// with token, stopped when the test ends.
func mgaStartAgent(t *testing.T, c *cluster, name, gateways, token, yaml string) *agentProc {
	t.Helper()
	return c.startAgentAt(name, filepath.Join(t.TempDir(), "data"), gateways, token, yaml)
}
