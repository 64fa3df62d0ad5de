package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/hostile"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// TestDirectPath: with both agents on their defaults, app-1's streams to
// db-1 go directly between the agents (QUIC with mutual TLS on each
// agent's one UDP socket), decided and audited by the gateway: a 100 MiB
// download arrives whole, a revocation resets a direct stream on both
// agents, and a direct stream outlives the gateway (SIGKILL).
func TestDirectPath(t *testing.T) {
	e := newTunnelEnv(t)

	t.Run("100 MiB over the direct path", func(t *testing.T) {
		c, err := net.Dial("tcp", e.sourceAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil || n != sourceSize || hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
			t.Fatalf("read %d bytes (%v) with digest %x; want %d identical bytes", n, err, h.Sum(nil), sourceSize)
		}
		// The agents say which path each stream took; the gateway's audit
		// event says it too.
		waitFor(t, 10*time.Second, "app-1 logs a direct stream to db-1/source", func() bool {
			return strings.Contains(e.app.log.String(), `"direct stream","listener":"source"`) ||
				strings.Contains(e.app.log.String(), "msg=\"direct stream\" listener=source")
		})
		if !strings.Contains(e.db.log.String(), "direct=true") && !strings.Contains(e.db.log.String(), `"direct":true`) {
			t.Errorf("db-1 delivered no direct stream:\n%s", e.db.log.String())
		}
		if n := directEvents(t, e.admin); n == 0 {
			t.Errorf("no stream.allowed event says path=direct")
		}
	})

	t.Run("agents ls shows the path", func(t *testing.T) {
		c := dialEcho(t, e.echoAddr)
		defer c.Close()
		var agents []struct {
			Name          string `json:"name"`
			Direct        string `json:"direct"`
			DirectStreams int    `json:"direct_streams"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "agents", "ls", "--json")), &agents); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if a.Name == "app-1" && (a.Direct != "on" || a.DirectStreams < 1) {
				t.Errorf("agents ls says app-1 has direct %q with %d direct streams; want on, at least 1", a.Direct, a.DirectStreams)
			}
		}
		if ls := e.admin.must("admin", "agents", "ls"); !strings.Contains(ls, "direct, 0 relayed") {
			t.Errorf("agents ls does not show the streams by path:\n%s", ls)
		}
	})

	t.Run("a revocation resets a direct stream", func(t *testing.T) {
		c := dialEcho(t, e.echoAddr)
		defer c.Close()
		var rules []struct {
			ID int64  `json:"id"`
			To string `json:"to"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "policy", "ls", "--json")), &rules); err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if r.To == "db-1/echo" {
				e.admin.must("admin", "policy", "rm", fmt.Sprint(r.ID))
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read after the rule was removed: %v; want the connection reset", err)
		}
		waitFor(t, 10*time.Second, "app-1 logs the cut", func() bool {
			return strings.Contains(e.app.log.String(), "direct stream cut by the gateway")
		})
		e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	})

	t.Run("a direct stream outlives the gateway", func(t *testing.T) {
		var c net.Conn
		waitFor(t, 30*time.Second, "an echo stream once the policy is back", func() bool {
			cc, err := net.Dial("tcp", e.echoAddr)
			if err == nil && echoOnce(cc) == nil {
				c = cc
				return true
			}
			if cc != nil {
				cc.Close()
			}
			return false
		})
		defer c.Close()
		// A download under way when the gateway dies arrives whole.
		dl, err := net.Dial("tcp", e.sourceAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer dl.Close()
		_ = dl.SetReadDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		if _, err := io.CopyN(h, dl, 4<<20); err != nil {
			t.Fatalf("first 4 MiB: %v", err)
		}
		if err := e.c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-e.c.done
		n, err := io.Copy(h, dl)
		if err != nil || 4<<20+n != sourceSize || hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
			t.Errorf("download across the gateway's death: %d bytes (%v); want all %d, identical", 4<<20+n, err, sourceSize)
		}
		// Past the QUIC idle timeout (8 s), so that the agents have noticed
		// the gateway is gone, the echo stream still works.
		deadline := time.Now().Add(12 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			if err := echoOnce(c); err != nil {
				t.Fatalf("echo %d after the gateway was killed: %v", i, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if !strings.Contains(e.app.log.String(), "disconnected from the gateway") {
			t.Errorf("app-1 did not notice the gateway was gone:\n%s", e.app.log.String())
		}
	})
}

// TestRelayedPath: with `direct: off` on app-1, its streams go through the
// gateway relay: the same 100 MiB arrives whole, and no stream is direct.
func TestRelayedPath(t *testing.T) {
	e := newTunnelEnvWith(t, "direct: off\n")
	c, err := net.Dial("tcp", e.sourceAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != sourceSize || hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
		t.Fatalf("read %d bytes (%v); want %d identical bytes", n, err, sourceSize)
	}
	if strings.Contains(e.app.log.String(), "direct stream") || strings.Contains(e.db.log.String(), "direct=true") ||
		strings.Contains(e.db.log.String(), `"direct":true`) {
		t.Errorf("a stream went direct with direct: off on app-1")
	}
	if n := directEvents(t, e.admin); n != 0 {
		t.Errorf("%d stream.allowed events say path=direct with direct: off on app-1", n)
	}
	e.pg.Pgbench(t, e.pgAddr, "-i", "-s", "1", "-q")
	if out := e.pg.Pgbench(t, e.pgAddr, "-c", "4", "-j", "2", "-T", "3"); !strings.Contains(out, "number of failed transactions: 0") {
		t.Errorf("pgbench through the relay reported failures:\n%s", out)
	}
}

// directEvents counts the stream.allowed events that say path=direct.
func directEvents(t *testing.T, admin *user) int {
	t.Helper()
	var evs []struct {
		Type    string            `json:"type"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatalf("audit ls --json: %v", err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Type == "stream.allowed" && ev.Details["path"] == "direct" {
			n++
		}
	}
	return n
}

// dialEcho connects to an echo listener and checks one round trip.
func dialEcho(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(c); err != nil {
		c.Close()
		t.Fatalf("echo: %v", err)
	}
	return c
}

// TestDirectPathTCP: with both agents on their defaults, a direct stream
// goes on a TCP connection of its own with mutual TLS 1.3 between the
// agents (db-1 listens on TCP on its UDP socket's port number): 100 MiB
// arrive whole, a revocation resets the stream on both sides; with that
// TCP port blocked, new streams take the QUIC peer link instead.
func TestDirectPathTCP(t *testing.T) {
	e := newTunnelEnv(t)
	var udpPort, tcpPort uint16
	socks, err := hostile.Sockets(e.db.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.Proto == "udp" {
			udpPort = s.Addr.Port()
		}
	}
	for _, s := range socks {
		if s.Proto == "tcp" && s.Addr.Port() == udpPort {
			tcpPort = s.Addr.Port()
		}
	}
	if udpPort == 0 || tcpPort == 0 {
		t.Fatalf("db-1 holds %v; want a UDP socket and a TCP listener on the same port", socks)
	}
	tcpStreams := func(log string) int {
		return strings.Count(log, `"msg":"direct stream","listener":"source","target":"db-1/source","transport":"tcp"`) +
			strings.Count(log, `msg="direct stream" listener=source target=db-1/source transport=tcp`)
	}
	quicStreams := func(log string) int {
		return strings.Count(log, `"msg":"direct stream","listener":"source","target":"db-1/source"}`) +
			strings.Count(log, "msg=\"direct stream\" listener=source target=db-1/source\n")
	}
	download := func(t *testing.T) {
		t.Helper()
		c, err := net.Dial("tcp", e.sourceAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil || n != sourceSize || hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
			t.Fatalf("read %d bytes (%v) with digest %x; want %d identical bytes", n, err, h.Sum(nil), sourceSize)
		}
	}

	t.Run("100 MiB over TCP", func(t *testing.T) {
		download(t)
		waitFor(t, 10*time.Second, "app-1 logs a direct stream over TCP to db-1/source", func() bool {
			return tcpStreams(e.app.log.String()) == 1
		})
		if !strings.Contains(e.db.log.String(), `"transport":"tcp"`) && !strings.Contains(e.db.log.String(), "transport=tcp") {
			t.Errorf("db-1 delivered no direct stream over TCP:\n%s", e.db.log.String())
		}
	})

	t.Run("a revocation resets a direct stream over TCP", func(t *testing.T) {
		c := dialEcho(t, e.echoAddr)
		defer c.Close()
		if s := e.app.log.String(); !strings.Contains(s, `"target":"db-1/echo","transport":"tcp"`) && !strings.Contains(s, "target=db-1/echo transport=tcp") {
			t.Fatalf("the echo stream did not go over TCP:\n%s", s)
		}
		var rules []struct {
			ID int64  `json:"id"`
			To string `json:"to"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "policy", "ls", "--json")), &rules); err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if r.To == "db-1/echo" {
				e.admin.must("admin", "policy", "rm", fmt.Sprint(r.ID))
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read after the rule was removed: %v; want the connection reset", err)
		}
		waitFor(t, 10*time.Second, "app-1 logs the cut", func() bool {
			return strings.Contains(e.app.log.String(), "direct stream cut by the gateway")
		})
		e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	})

	t.Run("TCP blocked: QUIC", func(t *testing.T) {
		portBlock(t, "tcp", int(tcpPort))
		before := quicStreams(e.app.log.String())
		download(t)
		if !strings.Contains(e.app.log.String(), "direct path over TCP unavailable; using QUIC") {
			t.Errorf("app-1 did not say TCP was unavailable:\n%s", e.app.log.String())
		}
		if n := quicStreams(e.app.log.String()); n != before+1 {
			t.Errorf("app-1 logs %d direct streams over QUIC to db-1/source after the block (was %d); want one more:\n%s",
				n, before, e.app.log.String())
		}
		if n := tcpStreams(e.app.log.String()); n != 1 {
			t.Errorf("app-1 logs %d direct streams over TCP to db-1/source; want only the one before the block", n)
		}
	})
}

// portBlock drops proto (tcp or udp) packets to port on this machine
// (nftables, input hook) until the test ends.
func portBlock(t *testing.T, proto string, port int) {
	t.Helper()
	nft := testenv.LookPath(t, "nft")
	table := fmt.Sprintf("tunnel_test_%s_%d_%d", proto, os.Getpid(), port)
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
		{"add", "rule", "inet", table, "in", proto, "dport", fmt.Sprint(port), "drop"},
	} {
		if err := run(args...); err != nil {
			_ = run("delete", "table", "inet", table)
			t.Fatalf("block %s port %d: %v (this test needs root and nftables)", proto, port, err)
		}
	}
	t.Cleanup(func() {
		if err := run("delete", "table", "inet", table); err != nil {
			t.Errorf("lift the %s block: %v", proto, err)
		}
	})
}
