package mariadbtest_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/mariadbtest"
)

func TestCreateInsertSelect(t *testing.T) {
	t.Parallel()
	s := mariadbtest.Start(t)

	s.MySQL(t, s.Addr, `
		CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL);
		INSERT INTO items VALUES (1, 'one'), (2, 'two');
		INSERT INTO items VALUES (3, 'three');
	`)
	got := s.MySQL(t, s.Addr, "SELECT id, name FROM items ORDER BY id")
	if want := "1\tone\n2\ttwo\n3\tthree"; got != want {
		t.Errorf("rows = %q, want %q", got, want)
	}
	got = s.MySQL(t, "", "SELECT CURRENT_USER(), DATABASE(), @@port")
	if want := fmt.Sprintf("app@%%\tapp\t%d", s.Port); got != want {
		t.Errorf("session = %q, want %q", got, want)
	}
	if got := s.RootSQL(t, "SELECT COUNT(*) FROM app.items"); got != "3" {
		t.Errorf("root sees %q rows, want 3", got)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	s := mariadbtest.Start(t)

	bad := *s
	bad.Password = "wrong"
	if _, err := bad.TryMySQL(s.Addr, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("wrong password: err = %v, want access denied", err)
	}
	root := *s
	root.User, root.Password, root.Database = "root", "", ""
	if _, err := root.TryMySQL(s.Addr, "SELECT 1"); err == nil {
		t.Errorf("root logged in over TCP without a password")
	}
	if _, err := s.TryMySQL(s.Addr, "SELECT * FROM mysql.user"); err == nil {
		t.Errorf("app user can read mysql.user")
	}
}

func TestTwoServersInParallel(t *testing.T) {
	t.Parallel()
	servers := make([]*mariadbtest.Server, 2)
	t.Run("group", func(t *testing.T) {
		for i := range servers {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				s := mariadbtest.Start(t)
				servers[i] = s
				s.MySQL(t, s.Addr, fmt.Sprintf("CREATE TABLE which (n INT); INSERT INTO which VALUES (%d)", i))
				if got := s.MySQL(t, s.Addr, "SELECT n FROM which"); got != fmt.Sprint(i) {
					t.Errorf("server %d: which = %q", i, got)
				}
			})
		}
	})
	a, b := servers[0], servers[1]
	if a == nil || b == nil {
		t.Fatal("a server did not start")
	}
	if a.Port == b.Port || a.Dir == b.Dir {
		t.Errorf("servers share port or dir: %s %s / %s %s", a.Addr, a.Dir, b.Addr, b.Dir)
	}
	// The subtests' cleanups have run: nothing is left behind.
	for _, s := range servers {
		if err := syscall.Kill(-s.PID(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("mariadbd process group %d still exists after cleanup (kill 0: %v)", s.PID(), err)
		}
		if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after cleanup (stat: %v)", s.Dir, err)
		}
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	t.Parallel()
	s := mariadbtest.Start(t)
	s.Stop()
	if err := syscall.Kill(-s.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after Stop (kill 0: %v)", s.PID(), err)
	}
}

// TestManyConnections opens 200 TCP connections at once; each must get the
// server's handshake, not a "Too many connections" error packet.
func TestManyConnections(t *testing.T) {
	t.Parallel()
	s := mariadbtest.Start(t)
	const n = 200
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// Packet header: 3-byte length, sequence id; then the payload,
		// whose first byte is 10 (protocol version) or 0xff (error).
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err != nil {
			t.Fatalf("connection %d: reading handshake: %v", i, err)
		}
		if hdr[4] != 10 {
			rest := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16-1)
			_, _ = io.ReadFull(c, rest)
			t.Fatalf("connection %d: not a handshake (first byte %#x): %q", i, hdr[4], rest)
		}
	}
	// The server still serves queries with all of them open.
	if got := s.MySQL(t, s.Addr, "SELECT 1"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
}

// TestLeavesSharedTmpAlone: a starting mariadbd deletes the "#sql*" files in
// its tmpdir, which used to be /tmp for mariadb-install-db, so concurrent
// Starts (in other test packages too) deleted each other's temporary tables
// and mariadb-install-db failed now and then. Every mariadbd must use the
// server's own tmpdir.
func TestLeavesSharedTmpAlone(t *testing.T) {
	t.Parallel()
	canary, err := os.CreateTemp(os.TempDir(), "#sql-mariadbtest-canary-*.MAI")
	if err != nil {
		t.Fatal(err)
	}
	canary.Close()
	defer os.Remove(canary.Name())

	s := mariadbtest.Start(t)
	s.Stop()
	if _, err := os.Stat(canary.Name()); err != nil {
		t.Errorf("%s was removed while a server started: %v", canary.Name(), err)
	}
	if !strings.HasPrefix(s.TmpDir, s.Dir+string(os.PathSeparator)) {
		t.Errorf("TmpDir %q is not inside Dir %q", s.TmpDir, s.Dir)
	}
}
