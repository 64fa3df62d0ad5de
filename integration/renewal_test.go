package integration

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestAgentRenewal gives agents one-minute certificates and keeps a
// connection busy through the tunnel while they renew: the connection
// must not drop, and new connections must keep working afterwards.
func TestAgentRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a certificate renewal (about 45 s)")
	}
	c := startCluster(t, "--login-burst", "1000", "--agent-ttl", "1m")
	admin := c.adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	db := c.startAgent("db-1", admin.token("db-1"), fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n", echo.addr()))
	local := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := c.startAgent("app-1", admin.token("app-1"), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: db-1/echo}\n", local))
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	dialRetry(t, local, echoOnce, 20*time.Second)

	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	renewed := func() bool {
		return strings.Contains(db.log.String(), "certificate renewed") && strings.Contains(app.log.String(), "certificate renewed")
	}
	deadline := time.Now().Add(70 * time.Second)
	for i := 0; !renewed(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the agents did not renew their one-minute certificates within 70 s")
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("round %d\n", i)
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatalf("round %d: write on the long-lived connection: %v", i, err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("round %d: the long-lived connection broke during renewal: %q, %v", i, got, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The old connection still works after both renewed...
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadString('\n'); err != nil || got != "after\n" {
		t.Fatalf("after renewal: %q, %v", got, err)
	}
	// ...and new connections go over the new ones.
	dialRetry(t, local, echoOnce, 10*time.Second)
}
