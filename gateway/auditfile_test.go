package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

func auditFileAppend(t *testing.T, st *sqlitestore.Store, n int) {
	t.Helper()
	evs := make([]audit.Event, n)
	for i := range evs {
		evs[i] = audit.Event{Time: time.Now(), Type: audit.LoginSuccess, Actor: "bob", Outcome: audit.Success}
	}
	if _, err := st.AppendAudits(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

func fileSeqs(t *testing.T, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// TestAuditFile: the file gets each event once, in order; a reopen
// resumes after its last complete line, cutting off a partial one; a
// file whose last line is not an event is refused; a rotated file is
// noticed and the new one takes over; the file is 0600.
func TestAuditFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	path := filepath.Join(dir, "audit.jsonl")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	auditFileAppend(t, st, 3)
	af, err := openAuditFile(path, st, log)
	if err != nil {
		t.Fatal(err)
	}
	if af.last != 0 {
		t.Fatalf("an empty file resumes after %d; want 0", af.last)
	}
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fileSeqs(t, path); len(got) != 3 || got[2] != 3 {
		t.Fatalf("seqs %v; want 1..3", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	af.f.Close()

	// A crash mid-line, more events, a restart.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"seq":4,"ti`)
	f.Close()
	auditFileAppend(t, st, 2)
	af, err = openAuditFile(path, st, log)
	if err != nil {
		t.Fatal(err)
	}
	if af.last != 3 {
		t.Errorf("resumes after %d; want 3 (the last complete line)", af.last)
	}
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fileSeqs(t, path); len(got) != 5 || got[3] != 4 || got[4] != 5 {
		t.Fatalf("after the restart seqs %v; want 1..5", got)
	}

	// Rotation: moved away, noticed, a new file from the next event.
	if af.rotated() {
		t.Error("rotated before any rotation")
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if !af.rotated() {
		t.Fatal("a moved file is not noticed")
	}
	af.reopen("test")
	auditFileAppend(t, st, 1)
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fileSeqs(t, path); len(got) != 1 || got[0] != 6 {
		t.Errorf("the new file holds %v; want [6]", got)
	}
	af.f.Close()
	// Emptied (rotated while down): FILE.pos, or without it FILE.1's
	// last line, says where to go on.
	os.WriteFile(path, nil, 0o600)
	if af, err = openAuditFile(path, st, log); err != nil || af.last != 6 {
		t.Errorf("empty file with a FILE.pos at 6: resumes after %d (%v); want 6", af.last, err)
	}
	af.f.Close()
	os.Remove(path + ".pos")
	if af, err = openAuditFile(path, st, log); err != nil || af.last != 5 {
		t.Errorf("empty file with a FILE.1 ending at 5: resumes after %d (%v); want 5", af.last, err)
	}
	af.f.Close()

	other := filepath.Join(dir, "other.log")
	os.WriteFile(other, []byte("some other program's log\n"), 0o600)
	if _, err := openAuditFile(other, st, log); err == nil || !strings.Contains(err.Error(), "not an audit event") {
		t.Errorf("a file of another program: %v; want a refusal", err)
	}
}
