package integration

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// TestDirectRevokeAfterItsGatewayDied: a direct stream outlives the
// gateway that decided it, and a revocation made afterwards on another
// gateway still cuts it: the target agent reported the stream to every
// gateway it is connected to (adopt), and the one that carries out the
// lock tells the target to cut it. A gateway that comes back is told
// about the direct streams still running, too.
func TestDirectRevokeAfterItsGatewayDied(t *testing.T) {
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
	mgaStartAgent(t, g1, "db-1", both, admin1.token("db-1"), fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n", echo.addr()))
	// app-1 sends its streams through gateway 1, which decides them.
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := mgaStartAgent(t, g1, "app-1", both, admin1.token("app-1"), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: db-1/echo}\n", addr))
	admin1.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	for _, a := range []*user{admin1, admin2} {
		a.waitOnline("db-1", true, 30*time.Second)
		a.waitOnline("app-1", true, 30*time.Second)
	}
	dialRetry(t, addr, echoOnce, 30*time.Second)

	open := func() net.Conn {
		t.Helper()
		c := dialEcho(t, addr)
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := open()
	waitFor(t, 10*time.Second, "app-1 logs a direct stream", func() bool {
		return strings.Contains(app.log.String(), "direct stream")
	})

	if err := g1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g1.done
	// Past the idle timeout: the agents know gateway 1 is gone; the
	// direct stream goes on.
	time.Sleep(10 * time.Second)
	if err := echoOnce(first); err != nil {
		t.Fatalf("the direct stream did not outlive its gateway: %v", err)
	}

	// Gateway 1 comes back; a second direct stream, decided by it, and
	// the first still open.
	g1.start(mgaRunFlags(url, 1, g1.addr)...)
	admin1.waitOnline("db-1", true, 60*time.Second)
	admin1.waitOnline("app-1", true, 60*time.Second)
	second := open()

	// The lock, made on gateway 2, cuts both: the first through gateway
	// 2's report from db-1 (gateway 1 that decided it is another process
	// now), the second likewise or through its lease on gateway 1.
	admin2.must("admin", "agents", "lock", "app-1")
	for i, c := range []net.Conn{first, second} {
		cutStream(t, c, fmt.Sprintf("direct stream %d after app-1 was locked on gateway 2", i+1))
	}
}
