package integration

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestAuditVerifyBlankedHead is the tampering `audit verify` used to miss:
// with write access to the gateway's database, someone deletes the last
// audit events and blanks the recorded head, so that no head is left to
// compare the log's end with. An empty head over a log that holds events is
// a broken chain.
func TestAuditVerifyBlankedHead(t *testing.T) {
	c := startCluster(t)
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	admin.must("admin", "roles", "add", "ops", "--login", "root")
	if out := admin.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Fatalf("audit verify before the tampering: %q", out)
	}
	if err := c.stop(); err != nil {
		t.Fatalf("stop the gateway: %v", err)
	}

	// Delete the two role.created events and blank the head, keeping its
	// sequence number in step so that the gateway still starts and serves.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(c.dataDir, "gateway.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var last int64
	if err := db.QueryRowContext(ctx, `SELECT max(seq) FROM audit_events`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	var deleted int64
	for _, stmt := range []string{
		`DELETE FROM audit_events WHERE seq > ? AND type = 'role.created'`,
		`UPDATE audit_head SET hash = '', seq = (SELECT max(seq) FROM audit_events) WHERE id = 1 AND ? > 0`,
	} {
		res, err := db.ExecContext(ctx, stmt, last-2)
		if err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
		if n, _ := res.RowsAffected(); deleted == 0 {
			deleted = n
		}
	}
	if deleted != 2 {
		t.Fatalf("deleted %d events; want the last two (role.created)", deleted)
	}
	db.Close()

	c.start("--api-addr", c.addr) // the same address, which the admin's profile names
	se := admin.fails("admin", "audit", "verify")
	if !strings.Contains(se, "audit chain broken at event 1") || !strings.Contains(se, "head is empty") {
		t.Errorf("audit verify after the tail was deleted and the head blanked: got %q; want the chain broken because the head is empty", se)
	}
}
