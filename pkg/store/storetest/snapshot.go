package storetest

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testSnapshot checks that a store takes a snapshot of itself while in use.
func testSnapshot(t *testing.T, s store.Store) {
	sn, ok := s.(store.Snapshotter)
	if !ok {
		t.Fatalf("%T does not implement store.Snapshotter", s)
	}
	ctx := t.Context()
	must(t, "Initialize", s.Initialize(ctx, map[string]string{"cluster": "prod"}, nil, ev(audit.ClusterInit, "prod")))
	var buf bytes.Buffer
	info, err := sn.Snapshot(ctx, &buf)
	must(t, "Snapshot", err)
	if info.Kind != store.KindSQLite && info.Kind != store.KindPostgres {
		t.Errorf("Snapshot kind %q", info.Kind)
	}
	if info.SchemaVersion < 1 || buf.Len() == 0 {
		t.Errorf("Snapshot = %+v with %d bytes", info, buf.Len())
	}
}

// RunRestore checks that a snapshot of a store in use restores, whole, into
// a fresh store: open returns a new empty store, restore loads a snapshot
// into a new place and opens it, or returns the restore's error.
func RunRestore(t *testing.T, open func(t *testing.T) store.Store, restore func(t *testing.T, r io.Reader) (store.Store, error)) {
	ctx := t.Context()
	s := open(t)
	keys := []store.CAKey{{Kind: "x509", Public: []byte{1}, SealedPrivate: []byte("sealed ca/x509"), CreatedAt: t0, Active: true}}
	must(t, "Initialize", s.Initialize(ctx, map[string]string{"cluster": "prod"}, keys, ev(audit.ClusterInit, "prod")))
	mustCreateRole(t, s, "dev", "ubuntu")
	mustCreateUser(t, s, "alice", "dev")
	mustCreateSession(t, s, newSession("sess-1", "alice", "web-1", t0))
	must(t, "SaveRecording", s.SaveRecording(ctx, "sess-1", bytes.Repeat([]byte{0, 1, 0xff, '\\', '\n'}, 100000)))
	r, err := s.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "*", To: "db/*", CreatedBy: "admin", CreatedAt: t0}, ev(audit.PolicyAdded, "x"))
	must(t, "AddPolicyRule", err)
	evs := verified(t, s)

	var buf bytes.Buffer
	if _, err := s.(store.Snapshotter).Snapshot(ctx, &buf); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	snap := buf.Bytes()

	// Truncated snapshots are refused.
	if _, err := restore(t, bytes.NewReader(snap[:len(snap)/2])); err == nil {
		t.Errorf("restoring half a snapshot succeeded")
	}

	got, err := restore(t, bytes.NewReader(snap))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if c, err := got.GetMeta(ctx, "cluster"); err != nil || c != "prod" {
		t.Errorf("restored cluster = %q, %v", c, err)
	}
	u, err := got.GetUser(ctx, "alice")
	if err != nil || string(u.TOTPSecret) != "sealed totp/alice" || len(u.Roles) != 1 {
		t.Errorf("restored user = %+v, %v", u, err)
	}
	rec, err := got.GetRecording(ctx, "sess-1")
	if err != nil || len(rec) != 500000 || rec[4] != '\n' {
		t.Errorf("restored recording: %d bytes, %v", len(rec), err)
	}
	gotEvs := verified(t, got)
	if diff := cmp.Diff(evs, gotEvs); diff != "" {
		t.Errorf("restored audit log (-want +got):\n%s", diff)
	}
	// Ids continue after the restored ones.
	r2, err := got.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Deny, From: "*", To: "db/*", CreatedBy: "admin", CreatedAt: t0}, ev(audit.PolicyAdded, "y"))
	must(t, "AddPolicyRule after restore", err)
	if r2.ID <= r.ID {
		t.Errorf("a rule added after the restore has id %d; want more than %d", r2.ID, r.ID)
	}
	verified(t, got)
}
