package integration

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// TestMultiGatewayCertRevokeReachesOtherGateway: two real gateways on one
// real PostgreSQL, with the reconciliation sweep out of the way (1 h), so
// that only the fan-out of the revocation can act. The agent web-1 is
// connected to both; bob's stream to web-1/echo is relayed by gateway 2
// over web-1's connection there. web-1 is then enrolled again, with a new
// join token, through gateway 1: its earlier identity's certificates are
// revoked there, and gateway 2 must close the earlier identity's
// connection at once (and with it bob's stream), not keep it until a
// sweep; web-1 is then offline on gateway 2 (the earlier identity's
// reconnections are refused there) and online on gateway 1.
func TestMultiGatewayCertRevokeReachesOtherGateway(t *testing.T) {
	mgaNeedStore(t)
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)
	url := dbs.url(dbs.create(t))
	gws := initSharedGateways(t, url, 2)
	for i, c := range gws {
		addr := mgaFreeAddr(t, fmt.Sprintf("127.0.0.3%d", i+1))
		host, _, _ := net.SplitHostPort(addr)
		c.start("--store", url, "--id", fmt.Sprintf("gw-%d", i+1), "--api-addr", addr, "--name", host,
			"--heartbeat-interval", "1s", "--reconcile-interval", "1h", "--login-burst", "1000")
	}
	g1, g2 := gws[0], gws[1]
	admin1 := g1.adminUser()
	admin1.login()
	admin2 := g2.adminUser()
	admin2.login()

	echo := serve(t, echoHandler)
	yaml := fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n", echo.addr())
	mgaStartAgent(t, g1, "web-1", g1.addr+","+g2.addr, admin1.token("web-1"), yaml)
	admin1.waitOnline("web-1", true, 60*time.Second)
	admin2.waitOnline("web-1", true, 60*time.Second)

	// bob's stream goes through gateway 2 only.
	admin1.must("admin", "roles", "add", "ops", "--service", "web-1/echo")
	bob := addUser(t, admin1, "bob", "ops")
	bob.must("login", "--gateway", g2.addr, "--ca-pin", g1.pin, "--user", "bob", "--password-file", bob.pwPath, "--otp", bob.otp.next(t))
	port := freeLoopbackPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	_, proxyOut := bob.backgroundOut("proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
	dialRetry(t, addr, echoOnce, 30*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoOnce(c); err != nil {
		t.Fatalf("bob's stream through gateway 2 before the new enrolment: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		closed <- err
	}()

	// web-1 enrolled again through gateway 1 (another VM, a wiped data
	// directory), connected to gateway 1 only.
	mgaStartAgent(t, g1, "web-1", g1.addr, admin1.token("web-1"), yaml)

	// Generous deadlines: what is checked is that it happens at all
	// without the sweep.
	select {
	case <-closed:
	case <-time.After(60 * time.Second):
		t.Fatalf("bob's stream over web-1's earlier identity's connection to gateway 2 still open 60s after web-1 was enrolled again on gateway 1 (the revocation did not reach gateway 2)\ntunnel proxy:\n%s", proxyOut())
	}
	admin2.waitOnline("web-1", false, 60*time.Second)
	// The new identity works, through gateway 1.
	admin1.waitOnline("web-1", true, 60*time.Second)
}
