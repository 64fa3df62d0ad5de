package sqlitestore

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// openAtVersion creates a database file with only the first v migrations
// applied, as a gateway of that version would have left it, and returns it
// open without going through Open.
func openAtVersion(t *testing.T, path string, v int) *sql.DB {
	t.Helper()
	ctx := t.Context()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if err := createFile(path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(path, Options{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(ctx, `CREATE TABLE schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:v] {
		if err := apply(ctx, db, m, v); err != nil {
			t.Fatalf("apply %s: %v", m.name, err)
		}
	}
	return db
}

func columns(t *testing.T, db *sql.DB, table string) map[string]bool {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols[c] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return cols
}

// TestMigrateFromVersion1 opens a database written by a version-1 gateway
// and checks that 0002 keeps everything and gives old roles no reach.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "gateway.db")
	db := openAtVersion(t, path, 1)
	if cols := columns(t, db, "roles"); cols["nodes"] || cols["services"] || !cols["logins"] {
		t.Fatalf("a version-1 roles table has columns %v", cols)
	}

	created := time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO meta (key, value) VALUES ('cluster', 'prod')`, nil},
		{`INSERT INTO roles (name, logins, max_ttl, admin, created_at) VALUES (?, ?, ?, ?, ?)`,
			[]any{"ops", `["ubuntu","root"]`, int64(8 * time.Hour), 1, micros(created)}},
		{`INSERT INTO users (name, password_hash, totp_secret, created_at) VALUES ('alice', 'h', x'0102', ?)`,
			[]any{micros(created)}},
		{`INSERT INTO user_roles (user_name, role_name) VALUES ('alice', 'ops')`, nil},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := appendEvent(ctx, tx, nil, audit.Event{Time: created, Type: audit.RoleCreated, Actor: "admin", Subject: "ops", Outcome: audit.Success})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open of a version-1 database: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if v, err := schemaVersion(ctx, s.db); err != nil || v != SchemaVersion() || v < 2 {
		t.Errorf("schema version after Open = %d, %v; want %d", v, err, SchemaVersion())
	}

	// The old role is intact and reaches nothing (nil, not just empty).
	want := store.Role{Name: "ops", Logins: []string{"ubuntu", "root"}, MaxTTL: 8 * time.Hour, Admin: true, CreatedAt: created}
	got, err := s.GetRole(ctx, "ops")
	if err != nil {
		t.Fatalf("GetRole after migrating: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetRole after migrating (-want +got):\n%s", diff)
	}
	roles, err := s.ListRoles(ctx)
	if err != nil || len(roles) != 1 || roles[0].Nodes != nil || roles[0].Services != nil {
		t.Errorf("ListRoles after migrating = %+v, %v; want ops without nodes or services", roles, err)
	}
	u, err := s.GetUser(ctx, "alice")
	if err != nil || !cmp.Equal(u.Roles, []string{"ops"}) || string(u.TOTPSecret) != "\x01\x02" || !u.CreatedAt.Equal(created) {
		t.Errorf("GetUser after migrating = %+v, %v; want alice holding ops", u, err)
	}
	if v, err := s.GetMeta(ctx, "cluster"); err != nil || v != "prod" {
		t.Errorf("GetMeta after migrating = %q, %v; want prod", v, err)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(evs) != 1 || evs[0].Hash != first.Hash {
		t.Errorf("ListAudit after migrating = %+v, %v; want the one event", evs, err)
	}
	if err := verify(t, s); err != nil {
		t.Errorf("Verify after migrating: %v", err)
	}

	// And the new schema works.
	now := created.Add(time.Hour)
	ev := func(typ audit.Type) audit.Event {
		return audit.Event{Time: now, Type: typ, Actor: "admin", Outcome: audit.Success}
	}
	web := store.Role{Name: "web", Nodes: []string{"web-*"}, Services: []string{"*/http"}, CreatedAt: now}
	if err := s.CreateRole(ctx, web, ev(audit.RoleCreated)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetRole(ctx, "web"); err != nil || !cmp.Equal(got, web) {
		t.Errorf("GetRole(web) = %+v, %v; want %+v", got, err, web)
	}
	tok := store.JoinToken{Hash: hashOf("t"), Agent: "web-1", CreatedBy: "admin", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateJoinToken(ctx, tok, ev(audit.TokenCreated)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeJoinToken(ctx, tok.Hash, now, ev(audit.AgentEnrolled)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "web-1", To: "db-1/postgres", CreatedAt: now},
		ev(audit.PolicyAdded)); err != nil {
		t.Fatal(err)
	}
	if err := verify(t, s); err != nil {
		t.Errorf("Verify: %v", err)
	}
	evs, _ = s.ListAudit(ctx, store.AuditFilter{})
	if len(evs) != 5 {
		t.Errorf("the log has %d events; want 5", len(evs))
	}
}
