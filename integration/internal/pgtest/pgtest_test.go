package pgtest_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

func TestCreateInsertSelect(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)

	s.PSQL(t, s.Addr, `
		CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
		INSERT INTO items VALUES (1, 'one'), (2, 'two');
		INSERT INTO items VALUES (3, 'three');
	`)
	got := s.PSQL(t, s.Addr, "SELECT id, name FROM items ORDER BY id")
	if want := "1|one\n2|two\n3|three"; got != want {
		t.Errorf("rows = %q, want %q", got, want)
	}
	if got := s.PSQL(t, "", "SELECT current_user, current_database(), inet_server_port()"); got != fmt.Sprintf("app|app|%d", s.Port) {
		t.Errorf("session = %q", got)
	}
	// The app role cannot touch the superuser's objects; the superuser
	// sees the app's table over the socket.
	if got := s.SuperPSQL(t, "SELECT rolsuper FROM pg_roles WHERE rolname = 'app'"); got != "f" {
		t.Errorf("app rolsuper = %q, want f", got)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)

	bad := *s
	bad.Password = "wrong"
	if _, err := bad.TryPSQL(s.Addr, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("wrong password: err = %v, want password authentication failure", err)
	}
	super := *s
	super.User, super.Database = pgtest.Superuser, "postgres"
	if _, err := super.TryPSQL(s.Addr, "SELECT 1"); err == nil {
		t.Errorf("superuser logged in over TCP without a password")
	}
	if _, err := s.TryPSQL(s.Addr, "SELECT * FROM no_such_table"); err == nil || !strings.Contains(err.Error(), "no_such_table") {
		t.Errorf("bad query: err = %v, want error naming the table", err)
	}
}

func TestTwoServersInParallel(t *testing.T) {
	t.Parallel()
	servers := make([]*pgtest.Server, 2)
	t.Run("group", func(t *testing.T) {
		for i := range servers {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				s := pgtest.Start(t)
				servers[i] = s
				s.PSQL(t, s.Addr, fmt.Sprintf("CREATE TABLE which (n int); INSERT INTO which VALUES (%d)", i))
				if got := s.PSQL(t, s.Addr, "SELECT n FROM which"); got != fmt.Sprint(i) {
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
		checkGone(t, s)
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	// Open some backends so there is more than the postmaster to stop.
	s.Pgbench(t, s.Addr, "-i", "-s", "1", "-q")
	s.Stop()
	if err := syscall.Kill(-s.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after Stop (kill 0: %v)", s.PID(), err)
	}
}

func TestPgbenchConcurrent(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	s.Pgbench(t, s.Addr, "-i", "-s", "1", "-q")
	out := s.Pgbench(t, s.Addr, "-S", "-c", "8", "-j", "2", "-T", "2")
	tps, err := pgtest.PgbenchTPS(out)
	if err != nil || tps <= 0 {
		t.Fatalf("tps = %v, %v\n%s", tps, err, out)
	}
	t.Logf("pgbench -S -c 8: %.0f tps", tps)

	// 200 simultaneous connections fit under max_connections.
	out = s.Pgbench(t, "", "-S", "-c", "200", "-j", "4", "-t", "5")
	if !strings.Contains(out, "number of clients: 200") || !strings.Contains(out, "number of failed transactions: 0") {
		t.Errorf("pgbench -c 200 output:\n%s", out)
	}
}

// checkGone verifies that the server's processes are gone and its dir removed.
func checkGone(t *testing.T, s *pgtest.Server) {
	t.Helper()
	if err := syscall.Kill(-s.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres process group %d still exists after cleanup (kill 0: %v)", s.PID(), err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after cleanup (stat: %v)", s.Dir, err)
	}
}

// TestRestart: Restart stops the server, cutting its clients, and starts it
// again on the same port and data directory: the data is still there and
// the old process group is gone.
func TestRestart(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	s.PSQL(t, "", "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
	oldPID, addr := s.PID(), s.Addr

	s.Stop()
	if _, err := s.TryPSQL("", "SELECT 1"); err == nil {
		t.Fatal("psql worked while the server was stopped")
	}
	s.StartAgain(t)
	if s.Addr != addr {
		t.Errorf("restarted on %s; want the same address %s", s.Addr, addr)
	}
	if got := s.PSQL(t, "", "SELECT n FROM kept"); got != "7" {
		t.Errorf("after StartAgain: kept = %q; want 7", got)
	}
	if err := syscall.Kill(-oldPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the first postmaster's group %d still exists (kill 0: %v)", oldPID, err)
	}
	if s.PID() == oldPID {
		t.Errorf("PID is still the first postmaster's %d", oldPID)
	}

	s.Restart(t)
	if got := s.PSQL(t, s.Addr, "SELECT n FROM kept"); got != "7" {
		t.Errorf("after Restart: kept = %q; want 7", got)
	}
	if !strings.Contains(s.Log(), "database system is shut down") {
		t.Errorf("the log was not kept across the restart:\n%s", s.Log())
	}
}
