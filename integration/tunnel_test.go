package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/mariadbtest"
	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// tunnelEnv is one gateway and two agents: db-1 exposes the databases and
// test services, app-1 listens on loopback for them.
type tunnelEnv struct {
	c      *cluster
	admin  *user
	pg     *pgtest.Server
	maria  *mariadbtest.Server
	echo   *testServer
	hash   *testServer
	source *testServer
	canary *testServer
	db     *agentProc
	app    *agentProc
	// listener addresses on app-1
	pgAddr, mysqlAddr, echoAddr, hashAddr, sourceAddr, canaryAddr string
}

func newTunnelEnv(t *testing.T) *tunnelEnv {
	t.Helper()
	return newTunnelEnvWith(t, "")
}

// newTunnelEnvWith is newTunnelEnv with extra lines for app-1's file
// ("direct: off" keeps its streams on the gateway relay).
func newTunnelEnvWith(t *testing.T, appExtra string) *tunnelEnv {
	t.Helper()
	e := &tunnelEnv{}
	e.c = startCluster(t, "--login-burst", "1000")
	e.admin = e.c.adminUser()
	e.admin.login()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.pg = pgtest.Start(t) }()
	go func() { defer wg.Done(); e.maria = mariadbtest.Start(t) }()
	wg.Wait()
	if t.Failed() || e.pg == nil || e.maria == nil {
		t.FailNow()
	}
	e.echo = serve(t, echoHandler)
	e.hash = serve(t, hashHandler)
	e.source = serve(t, sourceHandler)
	e.canary = serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })

	dbYAML := fmt.Sprintf(`expose:
  - {name: postgres, address: %s, protocol: postgres}
  - {name: mysql, address: %s, protocol: mysql}
  - {name: echo, address: %s}
  - {name: hash, address: %s}
  - {name: source, address: %s}
  - {name: canary, address: %s}
`, e.pg.Addr, e.maria.Addr, e.echo.addr(), e.hash.addr(), e.source.addr(), e.canary.addr())
	e.db = e.c.startAgent("db-1", e.admin.token("db-1"), dbYAML)

	// PostgreSQL and MariaDB on the same port, on two loopback addresses,
	// as applications expect their database's standard port.
	port := freeLoopbackPort(t)
	e.pgAddr = fmt.Sprintf("127.0.0.1:%d", port)
	e.mysqlAddr = fmt.Sprintf("127.0.0.2:%d", port)
	ports := map[string]string{}
	for _, n := range []string{"echo", "hash", "source", "canary"} {
		ports[n] = fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	}
	e.echoAddr, e.hashAddr, e.sourceAddr, e.canaryAddr = ports["echo"], ports["hash"], ports["source"], ports["canary"]
	appYAML := fmt.Sprintf(`listen:
  - {name: orders-db, address: %s, target: db-1/postgres}
  - {name: users-db, address: %s, target: db-1/mysql}
  - {name: echo, address: %s, target: db-1/echo}
  - {name: hash, address: %s, target: db-1/hash}
  - {name: source, address: %s, target: db-1/source}
  - {name: canary, address: %s, target: db-1/canary}
`, e.pgAddr, e.mysqlAddr, e.echoAddr, e.hashAddr, e.sourceAddr, e.canaryAddr) + appExtra
	e.app = e.c.startAgent("app-1", e.admin.token("app-1"), appYAML)
	for _, svc := range []string{"postgres", "mysql", "echo", "hash", "source"} {
		e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/"+svc)
	}
	// canary has no allow rule: default deny.
	e.admin.waitOnline("db-1", true, 20*time.Second)
	e.admin.waitOnline("app-1", true, 20*time.Second)
	dialRetry(t, e.echoAddr, echoOnce, 20*time.Second)
	return e
}

// TestTunnelDatabases is the heart of the product: applications on app-1
// reach PostgreSQL and MariaDB on db-1 through 127.0.0.1, with the real
// psql, mysql and pgbench clients.
func TestTunnelDatabases(t *testing.T) {
	e := newTunnelEnv(t)

	e.pg.PSQL(t, e.pgAddr, "CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'tea'), (2, 'cake');")
	if got := e.pg.PSQL(t, e.pgAddr, "SELECT item FROM orders ORDER BY id"); got != "tea\ncake" {
		t.Errorf("psql through the tunnel read %q; want tea, cake", got)
	}
	// The rows are really in the server behind: read them directly.
	if got := e.pg.PSQL(t, e.pg.Addr, "SELECT count(*) FROM orders"); got != "2" {
		t.Errorf("direct count = %q; want 2", got)
	}

	e.maria.MySQL(t, e.mysqlAddr, "CREATE TABLE users (id INT PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ada'), (2, 'linus');")
	if got := e.maria.MySQL(t, e.mysqlAddr, "SELECT name FROM users ORDER BY id"); got != "ada\nlinus" {
		t.Errorf("mysql through the tunnel read %q; want ada, linus", got)
	}

	e.pg.Pgbench(t, e.pgAddr, "-i", "-s", "1", "-q")
	out := e.pg.Pgbench(t, e.pgAddr, "-c", "4", "-j", "2", "-T", "3")
	if !strings.Contains(out, "number of failed transactions: 0") {
		t.Errorf("pgbench through the tunnel reported failures:\n%s", out)
	}
	if tps, err := pgtest.PgbenchTPS(out); err != nil || tps <= 0 {
		t.Errorf("pgbench TPS = %v, %v; want a positive number", tps, err)
	}
}

// TestTunnelBytes checks TCP semantics end to end: 100 MiB both ways with
// the same SHA-256, a half-closing client that still gets the full answer,
// and 200 concurrent connections.
func TestTunnelBytes(t *testing.T) {
	e := newTunnelEnv(t)

	t.Run("upload 100 MiB and half-close", func(t *testing.T) {
		c, err := net.Dial("tcp", e.hashAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, 100<<20)); err != nil {
			t.Fatalf("send: %v", err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("read the answer after half-close: %v", err)
		}
		if want := hex.EncodeToString(h.Sum(nil)) + "\n"; got != want {
			t.Errorf("server hashed %q; want %q", got, want)
		}
	})

	t.Run("download 100 MiB", func(t *testing.T) {
		c, err := net.Dial("tcp", e.sourceAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			t.Fatalf("read: %v after %d bytes", err, n)
		}
		if n != sourceSize || hex.EncodeToString(h.Sum(nil)) != sourceDigest() {
			t.Errorf("got %d bytes with another digest; want %d identical bytes", n, sourceSize)
		}
	})

	t.Run("200 concurrent connections", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- echoPayload(e.echoAddr, i)
			}()
		}
		wg.Wait()
		close(errs)
		failed := 0
		for err := range errs {
			if err != nil {
				failed++
				if failed <= 3 {
					t.Error(err)
				}
			}
		}
		if failed > 0 {
			t.Errorf("%d of 200 concurrent connections failed", failed)
		}
	})
}

// echoPayload sends 64 KiB, half-closes, and checks the echo.
func echoPayload(addr string, i int) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("conn %d: %w", i, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	msg := make([]byte, 64<<10)
	rand.Read(msg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("conn %d: write: %w", i, werr)
	}
	if err != nil {
		return fmt.Errorf("conn %d: read: %w", i, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("conn %d: echo differs (%d bytes back, want %d)", i, len(got), len(msg))
	}
	return nil
}
