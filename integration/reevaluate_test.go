package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// cutStream checks that a tunnel connection no longer carries anything: a
// write or a read fails and nothing is echoed.
func cutStream(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, werr := c.Write([]byte("after\n"))
	got, rerr := io.ReadAll(c)
	if len(got) > 0 || werr == nil && rerr == nil {
		t.Errorf("%s still works: write %v, read %q, %v", what, werr, got, rerr)
	}
}

// dialLive opens a tunnel connection through addr and checks it echoes.
func dialLive(t *testing.T, addr string) net.Conn {
	t.Helper()
	dialRetry(t, addr, echoOnce, 20*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := echoOnce(c); err != nil {
		t.Fatalf("stream through %s: %v", addr, err)
	}
	return c
}

// TestReevaluateOnAccessChange: when an administrator changes a user's
// roles, a role or the policy rules, the live streams and SSH sessions the
// new rules no longer allow are closed at once, with the reason shown to
// the user, and those still allowed go on.
func TestReevaluateOnAccessChange(t *testing.T) {
	login := testenv.CurrentUser(t)
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "ops", "--login", login, "--node", "web-*", "--service", "web-1/echo")
	admin.must("admin", "roles", "add", "dba", "--service", "web-1/db")
	bob := addUser(t, admin, "bob", "ops", "dba")
	bob.login()
	echo, db := serve(t, echoHandler), serve(t, echoHandler)
	c.startAgent("web-1", admin.token("web-1"), fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n  - {name: db, address: %s}\n", echo.addr(), db.addr()))
	appEcho := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	appDB := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	c.startAgent("app-1", admin.token("app-1"), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: web-1/echo}\n  - {name: db, address: %s, target: web-1/db}\n", appEcho, appDB))
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/echo")
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/db")
	admin.waitOnline("web-1", true, 20*time.Second)
	admin.waitOnline("app-1", true, 20*time.Second)

	// bob: tunnel proxy db to web-1/db (dba) and web-1/echo (ops), and a
	// tunnel ssh session on web-1 (ops); app-1: streams to both services.
	dbPort, echoPort := freeLoopbackPort(t), freeLoopbackPort(t)
	_, dbOut := bob.backgroundOut("proxy", "db", "web-1/db", "--port", fmt.Sprint(dbPort))
	bob.background("proxy", "db", "web-1/echo", "--port", fmt.Sprint(echoPort))
	bobDB := dialLive(t, fmt.Sprintf("127.0.0.1:%d", dbPort))
	bobEcho := dialLive(t, fmt.Sprintf("127.0.0.1:%d", echoPort))
	appDBConn := dialLive(t, appDB)
	appEchoConn := dialLive(t, appEcho)
	wait, sshOut := bob.backgroundOut("ssh", login+"@web-1", "echo started-remote; sleep 60")
	waitFor(t, 20*time.Second, "the remote command to start", func() bool { return strings.Contains(sshOut(), "started-remote") })

	// users revoke bob dba: bob's database stream is cut, with the reason.
	admin.must("admin", "users", "revoke", "bob", "dba")
	cutStream(t, bobDB, "bob's web-1/db stream after users revoke bob dba")
	waitFor(t, 10*time.Second, "tunnel proxy to say why the stream closed", func() bool {
		return strings.Contains(dbOut(), "connection to web-1/db closed by the gateway: access changed by an administrator")
	})
	if err := echoOnce(bobEcho); err != nil {
		t.Errorf("bob's web-1/echo stream, still allowed by ops, broke: %v", err)
	}
	if code, out := wait(time.Second); code != -2 {
		t.Errorf("bob's SSH session, still allowed by ops, ended: exit %d, %q", code, out)
	}

	// policy rm of app-1 -> web-1/db: that agent stream dies, the other lives.
	var rules []struct {
		ID int64  `json:"id"`
		To string `json:"to"`
	}
	if err := json.Unmarshal([]byte(admin.must("admin", "policy", "ls", "--json")), &rules); err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.To == "web-1/db" {
			admin.must("admin", "policy", "rm", fmt.Sprint(r.ID))
		}
	}
	cutStream(t, appDBConn, "app-1's web-1/db stream after its rule was removed")
	if err := echoOnce(appEchoConn); err != nil {
		t.Errorf("app-1's web-1/echo stream, still allowed, broke: %v", err)
	}

	// roles update ops --node other: the SSH session on web-1 ends with
	// the reason; the echo stream (ops still lists web-1/echo) goes on.
	admin.must("admin", "roles", "update", "ops", "--node", "other")
	code, out := wait(15 * time.Second)
	if code == 0 || code == -2 || !strings.Contains(out, "access changed by an administrator: none of your roles allows web-1 any more") {
		t.Errorf("after roles update ops --node other: ssh exit %d, output %q; want it cut with the reason", code, out)
	}
	if err := echoOnce(bobEcho); err != nil {
		t.Errorf("bob's web-1/echo stream, still allowed by ops, broke: %v", err)
	}
	if err := echoOnce(appEchoConn); err != nil {
		t.Errorf("app-1's web-1/echo stream broke: %v", err)
	}

	audit := admin.must("admin", "audit", "ls")
	if !strings.Contains(audit, "access changed by an administrator") {
		t.Errorf("the audit log does not record the closures:\n%s", audit)
	}
}
