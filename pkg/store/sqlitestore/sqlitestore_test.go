package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/storetest"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t)
		return s
	})
}

func testEvent(i int) audit.Event {
	return audit.Event{
		Time:    time.Date(2025, 3, 14, 15, 9, i, 0, time.UTC),
		Type:    audit.LoginSuccess,
		Actor:   "alice",
		Outcome: audit.Success,
		Reason:  "ok",
		Details: map[string]string{"n": string(rune('a' + i))},
	}
}

func TestTamperDetected(t *testing.T) {
	tests := []struct {
		name    string
		sql     []string
		wantSeq int64
	}{
		{"edit a reason", []string{`UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3`}, 3},
		{"edit details", []string{`UPDATE audit_events SET details = '{"n":"z"}' WHERE seq = 4`}, 4},
		{"delete a middle event", []string{`DELETE FROM audit_events WHERE seq = 3`}, 3},
		{"swap two events", []string{
			`UPDATE audit_events SET seq = -1 WHERE seq = 2`,
			`UPDATE audit_events SET seq = 2 WHERE seq = 3`,
			`UPDATE audit_events SET seq = 3 WHERE seq = -1`,
		}, 2},
		{"delete the last event", []string{`DELETE FROM audit_events WHERE seq = 5`}, 5},
		{"delete the last two events", []string{`DELETE FROM audit_events WHERE seq >= 4`}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			s, _ := openTemp(t)
			for i := range 5 {
				if _, err := s.AppendAudit(ctx, testEvent(i)); err != nil {
					t.Fatalf("AppendAudit: %v", err)
				}
			}
			if err := verify(t, s); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			for _, q := range tt.sql {
				if _, err := s.db.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			err := verify(t, s)
			if !errors.Is(err, audit.ErrBrokenChain) {
				t.Fatalf("Verify after tampering = %v; want an error wrapping ErrBrokenChain", err)
			}
			var le *audit.BrokenLinkError
			if !errors.As(err, &le) || le.Seq != tt.wantSeq {
				t.Errorf("Verify after tampering = %v; want the break at event %d", err, tt.wantSeq)
			}

			// Appending goes on from the recorded head, so the damage stays
			// visible instead of being written over.
			if _, err := s.AppendAudit(ctx, testEvent(9)); err != nil {
				t.Fatalf("AppendAudit after tampering: %v", err)
			}
			if err := verify(t, s); !errors.As(err, &le) || le.Seq != tt.wantSeq {
				t.Errorf("Verify after tampering and appending = %v; want the break at event %d", err, tt.wantSeq)
			}
		})
	}
}

func verify(t *testing.T, s *Store) error {
	t.Helper()
	evs, err := s.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	head, err := s.AuditHead(t.Context())
	if err != nil {
		t.Fatalf("AuditHead: %v", err)
	}
	return audit.Verify(evs, head)
}

// TestAppendFailureRollsBack makes the audit insert fail and checks that the
// change it was to record is not made either.
func TestAppendFailureRollsBack(t *testing.T) {
	ctx := t.Context()
	s, _ := openTemp(t)
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER audit_full BEFORE INSERT ON audit_events
		BEGIN SELECT RAISE(ABORT, 'audit log full'); END`); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err := s.CreateRole(ctx, store.Role{Name: "ops", CreatedAt: now}, audit.Event{Time: now, Type: audit.RoleCreated})
	if err == nil || !strings.Contains(err.Error(), "audit log full") {
		t.Fatalf("CreateRole with a failing audit log = %v; want the audit error", err)
	}
	if _, err := s.GetRole(ctx, "ops"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRole after a CreateRole whose event failed: %v; want ErrNotFound", err)
	}
	err = s.UpdateRole(ctx, store.Role{Name: "ops"}, audit.Event{Time: now, Type: audit.RoleCreated})
	if err == nil {
		t.Fatalf("UpdateRole with a failing audit log succeeded")
	}
	if head, err := s.AuditHead(ctx); err != nil || head != "" {
		t.Errorf("AuditHead = %q, %v; want \"\"", head, err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := t.Context()
	s, path := openTemp(t)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, SchemaVersion()+4); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, err := Open(ctx, path)
	if err == nil {
		s2.Close()
		t.Fatalf("Open of a database with a newer schema succeeded")
	}
	want := fmt.Sprintf("database schema version %d is newer than this gateway (%d): upgrade tunnel-gateway",
		SchemaVersion()+4, SchemaVersion())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Open error = %q; want it to contain %q", err, want)
	}
}

func TestMigrations(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	if len(ms) == 0 {
		t.Fatalf("no embedded migrations")
	}
	ctx := t.Context()
	s, path := openTemp(t)
	var n, v int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != len(ms) || v != len(ms) {
		t.Errorf("schema_migrations has %d rows up to version %d; want %d up to %d", n, v, len(ms), len(ms))
	}
	// Opening again applies nothing twice.
	s.Close()
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer s2.Close()
	if err := s2.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(ms) {
		t.Errorf("after a second Open, schema_migrations has %d rows; want %d", n, len(ms))
	}
	var fk int
	if err := s2.db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("PRAGMA foreign_keys = %d, %v; want 1", fk, err)
	}
	var mode string
	if err := s2.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("PRAGMA journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestFileModes(t *testing.T) {
	old := setUmask(0)
	t.Cleanup(func() { setUmask(old) })
	s, path := openTemp(t)
	// Write something so that the WAL and shared-memory files exist.
	if _, err := s.AppendAudit(t.Context(), testEvent(0)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != path {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s has mode %v; want 0600", filepath.Base(p), got)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	s, path := openTemp(t)
	now := time.Now()
	if err := s.CreateRole(ctx, store.Role{Name: "ops", Logins: []string{"root"}, CreatedAt: now},
		audit.Event{Time: now, Type: audit.RoleCreated}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	r, err := s2.GetRole(ctx, "ops")
	if err != nil || !r.CreatedAt.Equal(audit.Normalize(now)) || len(r.Logins) != 1 {
		t.Errorf("GetRole after reopening = %+v, %v; want the role created before", r, err)
	}
	if err := verify(t, s2); err != nil {
		t.Errorf("Verify after reopening: %v", err)
	}
	// The chain goes on from where it was.
	ev, err := s2.AppendAudit(ctx, testEvent(1))
	if err != nil || ev.Seq != 2 {
		t.Errorf("AppendAudit after reopening = seq %d, %v; want 2, nil", ev.Seq, err)
	}
}

// TestOddPath checks that characters with a meaning in URIs reach the file
// system as they are.
func TestOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%20chars&x=y")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gateway.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.AppendAudit(t.Context(), testEvent(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is not where it was asked to be: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("Open created %d entries beside the directory; want just it", len(entries))
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if s, err := Open(context.Background(), ""); err == nil {
		s.Close()
		t.Errorf("Open(\"\") succeeded")
	}
}

func TestSyncOption(t *testing.T) {
	ctx := t.Context()
	for _, tt := range []struct {
		opts Options
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{Options{}, 1}, {Options{Sync: SyncFull}, 2}} {
		s, err := OpenWith(ctx, filepath.Join(t.TempDir(), "g.db"), tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := s.db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&got); err != nil || got != tt.want {
			t.Errorf("Sync %v: PRAGMA synchronous = %d, %v; want %d", tt.opts.Sync, got, err, tt.want)
		}
		s.Close()
	}
}

func TestRoleForwardingRoundTrip(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, r := range []store.Role{
		{Name: "fwd", Logins: []string{"ubuntu"}, PortForwarding: true, AgentForwarding: true},
		{Name: "plain", Logins: []string{"ubuntu"}},
	} {
		if err := s.CreateRole(ctx, r, testEvent(0)); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetRole(ctx, r.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.PortForwarding != r.PortForwarding || got.AgentForwarding != r.AgentForwarding {
			t.Errorf("role %s: got forwarding %v/%v; want %v/%v", r.Name, got.PortForwarding, got.AgentForwarding, r.PortForwarding, r.AgentForwarding)
		}
	}
}

// TestPoolBounded: a flood of concurrent calls never opens more than
// MaxConns connections (each holds descriptors that SQLite may keep until
// the process ends), and every call still completes.
func TestPoolBounded(t *testing.T) {
	ctx := t.Context()
	s, _ := openTemp(t)
	now := time.Now()
	if err := s.CreateRole(ctx, store.Role{Name: "ops", CreatedAt: now}, audit.Event{Time: now, Type: audit.RoleCreated}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if i%4 == 0 {
				_, err = s.AppendAudit(ctx, audit.Event{Time: now, Type: audit.LoginFailure})
			} else {
				_, err = s.GetRole(ctx, "ops")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a call under load failed: %v", err)
		}
	}
	if st := s.db.Stats(); st.MaxOpenConnections != MaxConns || st.OpenConnections > MaxConns {
		t.Errorf("pool: max %d, open %d; want at most %d", st.MaxOpenConnections, st.OpenConnections, MaxConns)
	}
}
