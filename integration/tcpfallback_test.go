package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/hostile"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// udpBlock drops UDP to port on this machine (nftables, input hook: on
// loopback that is every packet to the port) until the returned func
// lifts it; the test's cleanup lifts it too.
func udpBlock(t *testing.T, port int) func() {
	t.Helper()
	nft := testenv.LookPath(t, "nft")
	table := fmt.Sprintf("tunnel_test_%d_%d", os.Getpid(), port)
	run := func(args ...string) error {
		out, err := exec.Command(nft, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	for _, args := range [][]string{
		{"add", "table", "inet", table},
		{"add", "chain", "inet", table, "in", "{ type filter hook input priority 0; policy accept; }"},
		{"add", "rule", "inet", table, "in", "udp", "dport", fmt.Sprint(port), "drop"},
	} {
		if err := run(args...); err != nil {
			_ = run("delete", "table", "inet", table)
			t.Fatalf("block UDP port %d: %v (this test needs root and nftables)", port, err)
		}
	}
	lifted := false
	lift := func() {
		if !lifted {
			lifted = true
			if err := run("delete", "table", "inet", table); err != nil {
				t.Errorf("lift the UDP block: %v", err)
			}
		}
	}
	t.Cleanup(lift)
	return lift
}

// TestTCPFallback: with UDP to the gateway blocked, agents carry QUIC over
// TLS on the gateway's TCP port, and streams work (100 MiB with the same
// digest, pgbench); when UDP is back, new streams go over UDP again while
// a stream open over TCP goes on. app-1 has direct: off, so that its
// streams go through the gateway.
func TestTCPFallback(t *testing.T) {
	e := newTunnelEnvWith(t, "direct: off\n")
	_, portStr, _ := net.SplitHostPort(e.c.addr)
	var port int
	fmt.Sscan(portStr, &port)

	lift := udpBlock(t, port)
	// The UDP connections die at their idle timeout; each agent then finds
	// UDP blocked and the TCP port answering.
	for _, a := range []*agentProc{e.app, e.db} {
		waitFor(t, 90*time.Second, a.name+" carries QUIC over TCP", func() bool {
			return strings.Contains(a.log.String(), "meanwhile QUIC is carried over TCP")
		})
	}
	dialRetry(t, e.echoAddr, echoOnce, 60*time.Second)

	t.Run("100 MiB over TCP", func(t *testing.T) {
		c, err := net.Dial("tcp", e.sourceAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		h := sha256.New()
		start := time.Now()
		n, err := io.Copy(h, c)
		if err != nil || n != sourceSize || hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
			t.Fatalf("read %d bytes (%v); want %d identical bytes", n, err, sourceSize)
		}
		t.Logf("100 MiB over QUIC over TCP in %s", time.Since(start).Round(time.Millisecond))
	})
	t.Run("tunnel proxy db over TCP", func(t *testing.T) {
		e.admin.must("admin", "roles", "add", "echoers", "--service", "db-1/echo")
		bob := addUser(t, e.admin, "bob", "echoers")
		bob.login()
		port := freeLoopbackPort(t)
		_, out := bob.backgroundOut("proxy", "db", "db-1/echo", "--port", fmt.Sprint(port))
		dialRetry(t, fmt.Sprintf("127.0.0.1:%d", port), echoOnce, 60*time.Second)
		if strings.Contains(out(), "level=ERROR") {
			t.Errorf("tunnel proxy logged errors:\n%s", out())
		}
	})
	t.Run("pgbench over TCP", func(t *testing.T) {
		e.pg.Pgbench(t, e.pgAddr, "-i", "-s", "1", "-q")
		out := e.pg.Pgbench(t, e.pgAddr, "-c", "4", "-j", "2", "-T", "3")
		if !strings.Contains(out, "number of failed transactions: 0") {
			t.Errorf("pgbench over QUIC over TCP reported failures:\n%s", out)
		}
	})

	// A stream open over TCP while UDP comes back.
	held := dialEcho(t, e.echoAddr)
	defer held.Close()
	lift()
	for _, a := range []*agentProc{e.app, e.db} {
		waitFor(t, 120*time.Second, a.name+" back on UDP", func() bool {
			return strings.Contains(a.log.String(), "UDP to the gateway works again")
		})
	}
	if err := echoOnce(held); err != nil {
		t.Errorf("the stream open over TCP did not survive the return to UDP: %v", err)
	}
	dialRetry(t, e.echoAddr, echoOnce, 30*time.Second)
}

// TestDirectBrokenMidStream: the direct path breaks under a download (the
// target agent's UDP is blocked): the download either completes whole or
// ends with an error, never with a clean end of fewer bytes; and new
// connections get through by the relay over TCP.
func TestDirectBrokenMidStream(t *testing.T) {
	e := newTunnelEnv(t)
	var port int
	socks, err := hostile.Sockets(e.db.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.Proto == "udp" {
			port = int(s.Addr.Port())
		}
	}
	if port == 0 {
		t.Fatalf("db-1 holds no UDP socket: %v", socks)
	}
	c, err := net.Dial("tcp", e.sourceAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Minute))
	h := sha256.New()
	if _, err := io.CopyN(h, c, 1<<20); err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	udpBlock(t, port)
	n, err := io.Copy(h, c)
	switch {
	case err == nil && 1<<20+n == sourceSize:
		if hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
			t.Errorf("the download completed with other bytes")
		}
		t.Logf("the download completed before the block took effect")
	case err == nil:
		t.Errorf("the download ended cleanly after %d of %d bytes: silently truncated", 1<<20+n, sourceSize)
	default:
		t.Logf("the download ended with an error after %d bytes, as it must: %v", 1<<20+n, err)
	}
	// db-1 carries QUIC over TCP now; new connections are relayed.
	waitFor(t, 90*time.Second, "db-1 carries QUIC over TCP", func() bool {
		return strings.Contains(e.db.log.String(), "meanwhile QUIC is carried over TCP")
	})
	dialRetry(t, e.echoAddr, echoOnce, 120*time.Second)
}

// TestQUICOverTCPForced: --quic-over-tcp carries an agent's connection over
// TCP from the start, UDP working or not, and streams work through it.
func TestQUICOverTCPForced(t *testing.T) {
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	c.startAgentArgs("db-1", t.TempDir()+"/db", c.addr, admin.token("db-1"),
		"expose:\n  - {name: echo, address: "+echo.addr()+"}\n", "--quic-over-tcp")
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := c.startAgentArgs("app-1", t.TempDir()+"/app", c.addr, admin.token("app-1"),
		"listen:\n  - {name: echo, address: "+addr+", target: db-1/echo}\n", "--quic-over-tcp")
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	dialRetry(t, addr, echoOnce, 60*time.Second)
	if !strings.Contains(app.log.String(), "over=quic-over-tcp") {
		t.Errorf("app-1 does not say it is connected over TCP:\n%s", app.log.String())
	}
	if strings.Contains(app.log.String(), "direct stream\"") || strings.Contains(app.log.String(), "msg=\"direct stream\"") {
		t.Errorf("a stream went direct although both agents are on QUIC over TCP")
	}
}
