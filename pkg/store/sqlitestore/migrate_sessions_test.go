package sqlitestore

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// indexes returns the names of the indexes SQLite keeps on table, other
// than those it makes itself for keys.
func indexes(t *testing.T, s *Store, table string) map[string]bool {
	t.Helper()
	rows, err := s.db.QueryContext(t.Context(),
		`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	idx := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		idx[n] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestMigrateFromVersion2 opens a database written by a version-2 gateway
// and checks that 0003 keeps everything, adds the sessions and recordings,
// and that certificates issued before it can be revoked.
func TestMigrateFromVersion2(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "gateway.db")
	db := openAtVersion(t, path, 2)
	if cols := columns(t, db, "sessions"); len(cols) != 0 {
		t.Fatalf("a version-2 database has a sessions table with columns %v", cols)
	}

	created := time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO roles (name, logins, max_ttl, admin, created_at, nodes) VALUES ('dev', '["ubuntu"]', 0, 0, ?, '["web-*"]')`,
			[]any{micros(created)}},
		{`INSERT INTO users (name, password_hash, created_at) VALUES ('alice', 'h', ?)`, []any{micros(created)}},
		{`INSERT INTO user_roles (user_name, role_name) VALUES ('alice', 'dev')`, nil},
		{`INSERT INTO agents (name, created_at, enrolled_at) VALUES ('web-1', ?, ?)`, []any{micros(created), micros(created)}},
		{`INSERT INTO issued_certs (kind, serial, subject, principals, not_before, not_after, issued_at)
			VALUES ('ssh-user', '0a', 'alice', '["ubuntu"]', ?, ?, ?)`,
			[]any{micros(created), micros(created.Add(8 * time.Hour)), micros(created)}},
		{`INSERT INTO issued_certs (kind, serial, subject, principals, not_before, not_after, issued_at)
			VALUES ('x509', '0b', 'web-1', '[]', ?, ?, ?)`,
			[]any{micros(created), micros(created.Add(24 * time.Hour)), micros(created)}},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := appendEvent(ctx, tx, nil, audit.Event{Time: created, Type: audit.CertIssued, Actor: "alice", Subject: "0a", Outcome: audit.Success})
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
		t.Fatalf("Open of a version-2 database: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if v, err := schemaVersion(ctx, s.db); err != nil || v != SchemaVersion() || v < 3 {
		t.Errorf("schema version after Open = %d, %v; want %d", v, err, SchemaVersion())
	}
	for table, want := range map[string][]string{
		"sessions":   {"sessions_user_name", "sessions_node", "sessions_state", "sessions_created_at"},
		"recordings": nil,
	} {
		got := indexes(t, s, table)
		for _, i := range want {
			if !got[i] {
				t.Errorf("table %s has indexes %v; want %s", table, got, i)
			}
		}
		if cols := columns(t, s.db, table); len(cols) == 0 {
			t.Errorf("no table %s after migrating", table)
		}
	}

	// What was there is intact.
	u, err := s.GetUser(ctx, "alice")
	if err != nil || !cmp.Equal(u.Roles, []string{"dev"}) {
		t.Errorf("GetUser after migrating = %+v, %v; want alice holding dev", u, err)
	}
	if a, err := s.GetAgent(ctx, "web-1"); err != nil || !a.EnrolledAt.Equal(created) {
		t.Errorf("GetAgent after migrating = %+v, %v", a, err)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(evs) != 1 || evs[0].Hash != first.Hash {
		t.Errorf("ListAudit after migrating = %+v, %v; want the one event", evs, err)
	}
	if list, err := s.ListSessions(ctx, store.SessionFilter{}); err != nil || len(list) != 0 {
		t.Errorf("ListSessions after migrating = %v, %v; want none", list, err)
	}

	// And the new schema works, with the old certificates too.
	now := created.Add(time.Hour)
	ev := func(typ audit.Type, subject string) audit.Event {
		return audit.Event{Time: now, Type: typ, Actor: "admin", Subject: subject, Outcome: audit.Success}
	}
	ss := store.Session{ID: "s1", User: "alice", Node: "web-1", Login: "ubuntu", CreatedAt: now,
		Deadline: now.Add(time.Hour), State: store.SessionActive, SourceIP: "192.0.2.9", CertSerial: "0c"}
	cert := store.IssuedCert{Serial: "0c", Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User, NotBefore: now,
		NotAfter: now.Add(time.Hour), IssuedAt: now, Principals: []string{"ubuntu"}}
	if err := s.CreateSession(ctx, ss, []store.IssuedCert{cert}, []audit.Event{ev(audit.CertIssued, "0c"), ev(audit.SessionCreated, "s1")}); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if err := s.SaveRecording(ctx, "s1", []byte("sealed")); err != nil {
		t.Fatalf("SaveRecording: %v", err)
	}
	got, err := s.GetSession(ctx, "s1")
	ss.Recording = true
	if err != nil || !cmp.Equal(got, ss) {
		t.Errorf("GetSession = %+v, %v; want %+v", got, err, ss)
	}
	// 0005 classified the old certificates by their subject's kind.
	if c, err := s.GetCertificate(ctx, store.CertX509, "0b"); err != nil || c.SubjectKind != identity.Agent {
		t.Errorf("GetCertificate(x509 0b of the agent web-1) = %+v, %v; want subject kind agent", c, err)
	}
	revoked, err := s.RevokeCertificates(ctx, store.RevokeFilter{Subject: "alice", SubjectKind: identity.User}, now, ev(audit.CertRevoked, "alice"))
	if err != nil || len(revoked) != 2 || revoked[0].Serial != "0a" || revoked[1].Serial != "0c" {
		t.Errorf("RevokeCertificates(alice) = %+v, %v; want 0a (from version 2) and 0c", revoked, err)
	}
	if _, err := s.EndSession(ctx, "s1", store.SessionRevoked, "access revoked by an administrator", now, ev(audit.SessionRevoked, "s1")); err != nil {
		t.Fatalf("EndSession: %v", err)
	}
	deny, err := s.RevokedCertificates(ctx, now)
	if err != nil || len(deny) != 2 {
		t.Errorf("RevokedCertificates = %+v, %v; want 0a and 0c", deny, err)
	}
	if err := verify(t, s); err != nil {
		t.Errorf("Verify: %v", err)
	}
	evs, _ = s.ListAudit(ctx, store.AuditFilter{})
	if len(evs) != 5 {
		t.Errorf("the log has %d events; want 5", len(evs))
	}
}

// TestSessionStateChecked: the schema refuses a state the code does not
// know, whatever writes it.
func TestSessionStateChecked(t *testing.T) {
	s, _ := openTemp(t)
	_, err := s.db.ExecContext(t.Context(), `INSERT INTO sessions (id, user_name, node, login, created_at, deadline, state)
		VALUES ('x', 'alice', 'web-1', 'ubuntu', 0, 1, 'paused')`)
	if err == nil {
		t.Errorf("a session in state paused was stored")
	}
}
