package integration

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

var dnsListenRE = regexp.MustCompile(`DNS for zone \S+ on (\S+) `)

// dnsAddr is the address a gateway said its DNS server answers on.
func dnsAddr(t *testing.T, c *cluster) string {
	t.Helper()
	var addr string
	waitFor(t, 10*time.Second, "the gateway reports its DNS address", func() bool {
		if m := dnsListenRE.FindStringSubmatch(c.log.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return addr
}

// TestDNSDiscovery: gateways publish themselves in their zone (SRV
// _tunnel._udp.ZONE, from the store's heartbeats, so each gateway's DNS
// lists all of them, as the real dig shows); an agent started with
// --gateway srv:ZONE enrols and connects to every gateway listed, connects
// to a gateway that joins and lets go of one that leaves; a user logs in
// and opens a stream the same way.
func TestDNSDiscovery(t *testing.T) {
	dig := testenv.LookPath(t, "dig")
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)
	url := dbs.url(dbs.create(t))
	const zone = "itest.tunnel.test"
	gws := initSharedGateways(t, url, 3)
	flags := func(i int) []string {
		ip := fmt.Sprintf("127.0.0.3%d", i)
		return []string{"--store", url, "--id", fmt.Sprintf("gw-%d", i), "--api-addr", ip + ":0", "--name", ip,
			"--heartbeat-interval", "1s", "--dns-addr", ip + ":0", "--dns-zone", zone, "--login-burst", "1000"}
	}
	gws[0].start(flags(1)...)
	gws[1].start(flags(2)...)
	dns1 := dnsAddr(t, gws[0])
	host, port, _ := strings.Cut(dns1, ":")

	srvRecords := func() string {
		out, err := exec.Command(dig, "@"+host, "-p", port, "SRV", "_tunnel._udp."+zone, "+short").CombinedOutput()
		if err != nil {
			t.Fatalf("dig: %v\n%s", err, out)
		}
		return string(out)
	}
	waitFor(t, 30*time.Second, "dig lists both gateways", func() bool {
		out := srvRecords()
		return strings.Contains(out, "gw-gw-1."+zone) && strings.Contains(out, "gw-gw-2."+zone)
	})
	if out, _ := exec.Command(dig, "@"+host, "-p", port, "A", "example.com").CombinedOutput(); !strings.Contains(string(out), "REFUSED") {
		t.Errorf("a name outside the zone was not refused:\n%s", out)
	}

	admin := gws[0].adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	agent := gws[0].startAgentArgs("web-1", t.TempDir()+"/web-1", "srv:"+zone, admin.token("web-1"),
		fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n", echo.addr()), "--dns-server", dns1)
	connectedTo := func(c *cluster) func() bool {
		return func() bool { return strings.Contains(agent.log.String(), "connected to gateway "+c.addr+"\n") }
	}
	for _, c := range gws[:2] {
		waitFor(t, 60*time.Second, "web-1 connected to "+c.addr, connectedTo(c))
	}

	// A user logs in through DNS, and reaches the echo service.
	admin.must("admin", "roles", "add", "echoers", "--service", "web-1/echo")
	bob := addUser(t, admin, "bob", "echoers")
	bob.must("login", "--gateway", "srv:"+zone, "--dns-server", dns1, "--ca-pin", gws[0].pin, "--user", "bob",
		"--password-file", bob.pwPath, "--otp", bob.otp.next(t))
	p := freeLoopbackPort(t)
	bob.backgroundOut("proxy", "db", "web-1/echo", "--port", fmt.Sprint(p))
	dialRetry(t, fmt.Sprintf("127.0.0.1:%d", p), echoOnce, 60*time.Second)

	// A third gateway joins: the agent connects to it at the records' TTL.
	gws[2].start(flags(3)...)
	waitFor(t, 120*time.Second, "web-1 connected to the new gateway "+gws[2].addr, connectedTo(gws[2]))
	// It leaves (a clean stop removes it from the store's list): the
	// agent lets its link go.
	if err := gws[2].stop(); err != nil {
		t.Logf("gateway 3 stopped: %v", err)
	}
	waitFor(t, 120*time.Second, "web-1 lets the gone gateway go", func() bool {
		return strings.Contains(agent.log.String(), "gateway left DNS; closing its connection")
	})
}

// TestAgentDNSStub: with dns: in its file, the real agent answers its
// listeners' names (NAME.CLUSTER.tunnel) on a loopback address, as the
// real dig shows, refuses other names, and the name reaches the service.
func TestAgentDNSStub(t *testing.T) {
	dig := testenv.LookPath(t, "dig")
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	c.startAgent("db-1", admin.token("db-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	port := freeLoopbackPort(t)
	dnsPort := testenv.FreePort(t)
	app := c.startAgent("app-1", admin.token("app-1"), fmt.Sprintf(
		"listen:\n  - {name: orders-db, address: 127.0.0.7:%d, target: db-1/echo}\ndns:\n  listen: 127.0.0.153:%d\n", port, dnsPort))
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	var ip string
	waitFor(t, 30*time.Second, "the agent answers orders-db."+c.name+".tunnel", func() bool {
		out, _ := exec.Command(dig, "@127.0.0.153", "-p", fmt.Sprint(dnsPort), "orders-db."+c.name+".tunnel", "A", "+short").CombinedOutput()
		ip = strings.TrimSpace(string(out))
		return ip == "127.0.0.7"
	})
	out, _ := exec.Command(dig, "@127.0.0.153", "-p", fmt.Sprint(dnsPort), "example.com", "A").CombinedOutput()
	if !strings.Contains(string(out), "REFUSED") {
		t.Errorf("a name outside the cluster was not refused:\n%s", out)
	}
	dialRetry(t, fmt.Sprintf("%s:%d", ip, port), echoOnce, 30*time.Second)
	if !strings.Contains(app.log.String(), "answering DNS for the listeners") {
		t.Errorf("the agent does not say it answers DNS:\n%s", app.log.String())
	}
}
