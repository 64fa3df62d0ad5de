package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// recordLog keeps the messages logged, for counting.
type recordLog struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *recordLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordLog) WithGroup(string) slog.Handler      { return h }
func (h *recordLog) count(sub string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

func openTestStore(t *testing.T, path string) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestAuditFileFullDisk: a write that fails half-way (a full disk) is cut
// back, and the retry writes each event once, every line whole.
func TestAuditFileFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openTestStore(t, filepath.Join(dir, "gateway.db"))
	path := filepath.Join(dir, "audit.jsonl")
	auditFileAppend(t, st, 2)
	af, err := openAuditFile(path, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer af.f.Close()
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	auditFileAppend(t, st, 250)
	full := true
	af.writeTo = func(f *os.File, b []byte) (int, error) {
		if full {
			n, _ := f.Write(b[:len(b)/2+7])
			return n, syscall.ENOSPC
		}
		return f.Write(b)
	}
	if err := af.step(ctx); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("a full disk: %v; want ENOSPC", err)
	}
	full = false
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	got := fileSeqs(t, path) // fails on a fragment
	if len(got) != 252 {
		t.Fatalf("%d lines after the retry; want 252 (each event once)", len(got))
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("line %d holds seq %d; want %d", i+1, s, i+1)
		}
	}
}

// TestAuditFileRestoredStore: a store restored from a backup older than
// the file (its log ends before the file's last line, then grows again
// with other events) is noticed: a discontinuity line, then the store's
// events after the last one both hold; nothing new is skipped.
func TestAuditFileRestoredStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbA, dbB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	a, err := sqlitestore.Open(ctx, dbA)
	if err != nil {
		t.Fatal(err)
	}
	auditFileAppend(t, a, 5)
	a.Close()
	b, _ := os.ReadFile(dbA)
	if err := os.WriteFile(dbB, b, 0o600); err != nil { // the backup
		t.Fatal(err)
	}
	a = openTestStore(t, dbA)
	auditFileAppend(t, a, 3)
	path := filepath.Join(dir, "audit.jsonl")
	log := &recordLog{}
	af, err := openAuditFile(path, a, slog.New(log))
	if err != nil {
		t.Fatal(err)
	}
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	af.f.Close()

	restored := openTestStore(t, dbB)
	auditFileAppend(t, restored, 2) // seq 6 and 7, other events
	af, err = openAuditFile(path, restored, slog.New(log))
	if err != nil {
		t.Fatal(err)
	}
	defer af.f.Close()
	if af.last != 5 {
		t.Errorf("resumes after %d; want 5 (the last event the file and the restored store share)", af.last)
	}
	if log.count("disagree") != 1 {
		t.Errorf("logged %q; want one error saying the file and the store disagree", log.msgs)
	}
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) != 11 {
		t.Fatalf("%d lines; want 8 events, a marker, 2 events:\n%s", len(lines), data)
	}
	var m map[string]any
	if err := json.Unmarshal(lines[8], &m); err != nil || m["type"] != markerType ||
		m["file_seq"] != float64(8) || m["store_seq"] != float64(7) || m["resume_after_seq"] != float64(5) {
		t.Errorf("line 9 = %s; want a discontinuity marker from file seq 8 (store at 7) resuming after 5", lines[8])
	}
	for i, want := range []int64{6, 7} {
		p, err := parseLine(lines[9+i])
		if err != nil || p.Seq != want {
			t.Errorf("line %d = %s; want event %d", 10+i, lines[9+i], want)
		}
	}
	// A restart after the marker resumes normally, with no new marker.
	af.f.Close()
	af, err = openAuditFile(path, restored, slog.New(log))
	if err != nil || af.last != 7 || log.count("disagree") != 1 {
		t.Errorf("restart after the marker: resumes after %d (%v), %d errors; want 7, still 1", af.last, err, log.count("disagree"))
	}
	af.f.Close()
}

// TestAuditFileRefusesForeignFiles: a symlink, a file of another program
// (even ending with a partial line) or of another user is refused before
// anything in it is changed.
func TestAuditFileRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, filepath.Join(dir, "gateway.db"))
	log := slog.New(slog.DiscardHandler)
	foreign := filepath.Join(dir, "foreign")
	const content = "root:x:0:0\nlast line without newline"
	os.WriteFile(foreign, []byte(content), 0o644)
	unchanged := func(what string) {
		t.Helper()
		b, _ := os.ReadFile(foreign)
		fi, _ := os.Stat(foreign)
		if string(b) != content || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: the file became %q mode %v; want it untouched", what, b, fi.Mode().Perm())
		}
	}
	link := filepath.Join(dir, "audit.jsonl")
	os.Symlink(foreign, link)
	if _, err := openAuditFile(link, st, log); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("a symlink: %v; want a refusal naming the symlink", err)
	}
	unchanged("through a symlink")
	if _, err := openAuditFile(foreign, st, log); err == nil || !strings.Contains(err.Error(), "not an audit event") {
		t.Errorf("another program's file: %v; want a refusal", err)
	}
	unchanged("given directly")
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other-user.jsonl")
		os.WriteFile(other, nil, 0o644)
		os.Chown(other, 65534, 65534)
		if _, err := openAuditFile(other, st, log); err == nil || !strings.Contains(err.Error(), "belongs to user id 65534") {
			t.Errorf("another user's file: %v; want a refusal", err)
		}
	}
}

// TestAuditFileReopenFailureLoggedOnce: a directory where FILE was logs
// one error per streak of failed reopens, not one per poll.
func TestAuditFileReopenFailureLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, filepath.Join(dir, "gateway.db"))
	log := &recordLog{}
	path := filepath.Join(dir, "audit.jsonl")
	af, err := openAuditFile(path, st, slog.New(log))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { af.f.Close() }()
	os.Remove(path)
	os.Mkdir(path, 0o700)
	for range 5 {
		af.reopen("test")
	}
	if n := log.count("reopen failed"); n != 1 {
		t.Errorf("5 failed reopens logged %d errors; want 1", n)
	}
	os.Remove(path)
	af.reopen("test")
	os.Remove(path)
	os.Mkdir(path, 0o700)
	af.reopen("test")
	af.reopen("test")
	if n := log.count("reopen failed"); n != 2 {
		t.Errorf("a second streak: %d errors in all; want 2", n)
	}
}

// TestAuditFileRotatedWhileDown: FILE rotated under another name than
// FILE.1 (dateext, compress) while the gateway was down: FILE.pos says
// where to go on, nothing is exported again.
func TestAuditFileRotatedWhileDown(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openTestStore(t, filepath.Join(dir, "gateway.db"))
	path := filepath.Join(dir, "audit.jsonl")
	auditFileAppend(t, st, 4)
	af, err := openAuditFile(path, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	af.f.Close()
	if fi, err := os.Stat(path + ".pos"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("FILE.pos: %v; want a 0600 file", err)
	}
	os.Rename(path, path+"-20261201.gz")
	auditFileAppend(t, st, 1)
	af, err = openAuditFile(path, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer af.f.Close()
	if err := af.step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fileSeqs(t, path); len(got) != 1 || got[0] != 5 {
		t.Errorf("the new file holds %v; want [5]", got)
	}
}
