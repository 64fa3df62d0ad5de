package storetest

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testSealed checks store.SealedStore: every sealed value (CA keys but
// references held elsewhere, TOTP secrets, recordings) is listed with its
// label, and replaced only if it is still what the caller read.
func testSealed(t *testing.T, s store.Store) {
	ss, ok := s.(store.SealedStore)
	if !ok {
		t.Fatalf("%T does not implement store.SealedStore", s)
	}
	ctx := t.Context()
	keys := []store.CAKey{
		{Kind: "x509", Public: []byte{1}, SealedPrivate: []byte("sealed ca/x509"), CreatedAt: t0, Active: true},
		{Kind: "ssh-user", Public: []byte{2}, SealedPrivate: []byte("ref:vault:ssh-user"), CreatedAt: t0, Active: true},
	}
	must(t, "Initialize", s.Initialize(ctx, map[string]string{"cluster": "prod"}, keys, ev(audit.ClusterInit, "prod")))
	mustCreateUser(t, s, "alice")
	mustCreateSession(t, s, newSession("sess-1", "alice", "web-1", t0))
	must(t, "SaveRecording", s.SaveRecording(ctx, "sess-1", []byte("sealed rec")))
	before := verified(t, s)

	refs, err := ss.SealedRefs(ctx)
	must(t, "SealedRefs", err)
	want := []store.SealedRef{
		{Kind: store.SealedCAKey, Key: refs[0].Key, Label: "ca/x509"},
		{Kind: store.SealedTOTP, Key: "alice", Label: "totp/alice"},
		{Kind: store.SealedRecording, Key: "sess-1", Label: "recording/sess-1"},
	}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Fatalf("SealedRefs (-want +got):\n%s", diff)
	}
	for i, wantV := range []string{"sealed ca/x509", "sealed totp/alice", "sealed rec"} {
		got, err := ss.GetSealed(ctx, refs[i])
		if err != nil || string(got) != wantV {
			t.Errorf("GetSealed(%v) = %q, %v; want %q", refs[i], got, err, wantV)
		}
	}

	// Compare-and-swap.
	for i, old := range []string{"sealed ca/x509", "sealed totp/alice", "sealed rec"} {
		checkErr(t, "ReplaceSealed with a stale value", ss.ReplaceSealed(ctx, refs[i], []byte("stale"), []byte("new")), store.ErrChanged)
		must(t, "ReplaceSealed", ss.ReplaceSealed(ctx, refs[i], []byte(old), []byte("resealed "+old)))
		got, err := ss.GetSealed(ctx, refs[i])
		if err != nil || !bytes.Equal(got, []byte("resealed "+old)) {
			t.Errorf("after ReplaceSealed, GetSealed(%v) = %q, %v", refs[i], got, err)
		}
	}
	u, err := s.GetUser(ctx, "alice")
	must(t, "GetUser", err)
	if string(u.TOTPSecret) != "resealed sealed totp/alice" {
		t.Errorf("GetUser's TOTP secret = %q after ReplaceSealed", u.TOTPSecret)
	}
	rec, err := s.GetRecording(ctx, "sess-1")
	if err != nil || string(rec) != "resealed sealed rec" {
		t.Errorf("GetRecording = %q, %v after ReplaceSealed", rec, err)
	}
	ks, err := s.CAKeys(ctx)
	must(t, "CAKeys", err)
	if string(ks[0].SealedPrivate) != "resealed sealed ca/x509" || string(ks[1].SealedPrivate) != "ref:vault:ssh-user" {
		t.Errorf("CAKeys after ReplaceSealed: %q, %q", ks[0].SealedPrivate, ks[1].SealedPrivate)
	}
	ghost := store.SealedRef{Kind: store.SealedTOTP, Key: "ghost", Label: "totp/ghost"}
	checkErr(t, "ReplaceSealed of an unknown user", ss.ReplaceSealed(ctx, ghost, nil, []byte("x")), store.ErrNotFound)
	_, err = ss.GetSealed(ctx, ghost)
	checkErr(t, "GetSealed of an unknown user", err, store.ErrNotFound)

	// Replacing appends nothing to the audit log.
	if after := verified(t, s); len(after) != len(before) {
		t.Errorf("ReplaceSealed appended %d audit events; want none", len(after)-len(before))
	}
}
