package storetest

import (
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testCARotation: a rotation's steps change the CA keys as documented,
// each with its event and a ChangeCA; a second start while one is under
// way, activating or removing an unknown key, and removing the active key
// are refused and change nothing; certificate expiry queries see only the
// certificates issued before the given time and not revoked.
func testCARotation(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := store.CAKey{Kind: "ssh-user", Public: []byte("ssh-ed25519 old"), SealedPrivate: []byte("sealed old"), CreatedAt: t0, Active: true}
	host := store.CAKey{Kind: "ssh-host", Public: []byte("ssh-ed25519 host"), SealedPrivate: []byte("sealed host"), CreatedAt: t0, Active: true}
	must(t, "Initialize", s.Initialize(ctx, map[string]string{"cluster": "prod"}, []store.CAKey{old, host}, ev(audit.ClusterInit, "prod")))

	w := watch(t, s)
	next := w.next
	phase := func(what string, want store.CAPhase) (store.CAKey, *store.CAKey, []store.CAKey) {
		t.Helper()
		keys, err := s.CAKeys(ctx)
		must(t, "CAKeys", err)
		active, pending, olds, got, ok := store.CARotationOf(keys, "ssh-user")
		if !ok || got != want {
			t.Fatalf("%s: phase = %q (active key found: %v); want %q", what, got, ok, want)
		}
		if _, _, _, hp, _ := store.CARotationOf(keys, "ssh-host"); hp != store.CAIdle {
			t.Fatalf("%s: the ssh-host CA is in phase %q; a rotation of ssh-user must not touch it", what, hp)
		}
		return active, pending, olds
	}
	events := func() int { t.Helper(); return len(verified(t, s)) }
	// Every step that changes a key moves the CA epoch on: to its event's
	// time in microseconds when that is higher (the first step here), else
	// by one; a refused one does not.
	base := uint64(t0.UnixMicro())
	epoch := func(what string, want uint64) {
		t.Helper()
		keys, got, err := store.ReadCAKeys(ctx, s)
		must(t, "ReadCAKeys", err)
		if got != want || len(keys) == 0 {
			t.Fatalf("%s: CA epoch %d (%d keys); want %d", what, got, len(keys), want)
		}
	}
	epoch("before start", 0)

	phase("before start", store.CAIdle)
	newKey := store.CAKey{Kind: "ssh-user", Public: []byte("ssh-ed25519 new"), SealedPrivate: []byte("sealed new"), CreatedAt: t0.Add(time.Hour), Active: true}
	must(t, "AddCAKey", s.AddCAKey(ctx, newKey, ev(audit.CARotationStarted, "ssh-user")))
	next(store.Change{Kind: store.ChangeCA, ID: "ssh-user"})
	active, pending, _ := phase("after start", store.CAStarted)
	if string(active.Public) != "ssh-ed25519 old" || pending == nil || string(pending.Public) != "ssh-ed25519 new" || pending.Active {
		t.Fatalf("after start: active %q, pending %+v; want the old key active and the new one pending, inactive", active.Public, pending)
	}
	checkUTC(t, "pending CreatedAt", pending.CreatedAt)
	epoch("after start", base)

	n := events()
	again := newKey
	again.Public, again.CreatedAt = []byte("ssh-ed25519 third"), t0.Add(2*time.Hour)
	checkErr(t, "second AddCAKey while a rotation is under way", s.AddCAKey(ctx, again, ev(audit.CARotationStarted, "ssh-user")), store.ErrExists)
	checkErr(t, "ActivateCAKey of an unknown key", s.ActivateCAKey(ctx, "ssh-user", []byte("nope"), t0, ev(audit.CARotationActivated, "ssh-user")), store.ErrNotFound)
	checkErr(t, "RemoveCAKey of an unknown key", s.RemoveCAKey(ctx, "ssh-user", []byte("nope"), ev(audit.CARotationFinished, "ssh-user")), store.ErrNotFound)
	if err := s.RemoveCAKey(ctx, "ssh-user", old.Public, ev(audit.CARotationFinished, "ssh-user")); err == nil {
		t.Fatal("RemoveCAKey of the active key succeeded; want a refusal")
	}
	if got := events(); got != n {
		t.Fatalf("refused calls appended %d events", got-n)
	}
	phase("after refused calls", store.CAStarted)
	epoch("after refused calls", base)

	activatedAt := t0.Add(90 * time.Minute)
	must(t, "ActivateCAKey", s.ActivateCAKey(ctx, "ssh-user", newKey.Public, activatedAt, ev(audit.CARotationActivated, "ssh-user")))
	next(store.Change{Kind: store.ChangeCA, ID: "ssh-user"})
	active, pending, olds := phase("after activate", store.CAActivated)
	epoch("after activate", base+1)
	if string(active.Public) != "ssh-ed25519 new" || pending != nil || len(olds) != 1 || string(olds[0].Public) != "ssh-ed25519 old" {
		t.Fatalf("after activate: active %q, pending %v, old %d keys; want the new key active and the old one kept", active.Public, pending, len(olds))
	}
	got, err := s.GetMeta(ctx, store.CAActivatedMeta("ssh-user"))
	must(t, "GetMeta activation time", err)
	if at, err := time.Parse(time.RFC3339Nano, got); err != nil || !at.Equal(activatedAt) {
		t.Fatalf("activation time = %q (%v); want %v", got, err, audit.Normalize(activatedAt))
	}
	// Activating again is harmless.
	must(t, "ActivateCAKey again", s.ActivateCAKey(ctx, "ssh-user", newKey.Public, activatedAt, ev(audit.CARotationActivated, "ssh-user")))
	next(store.Change{Kind: store.ChangeCA, ID: "ssh-user"})
	phase("after a second activate", store.CAActivated)
	checkErr(t, "AddCAKey before the old key is removed", s.AddCAKey(ctx, again, ev(audit.CARotationStarted, "ssh-user")), store.ErrExists)

	must(t, "RemoveCAKey", s.RemoveCAKey(ctx, "ssh-user", old.Public, ev(audit.CARotationFinished, "ssh-user")))
	next(store.Change{Kind: store.ChangeCA, ID: "ssh-user"})
	active, _, _ = phase("after finish", store.CAIdle)
	epoch("after activate again and finish", base+3)
	if string(active.Public) != "ssh-ed25519 new" {
		t.Fatalf("after finish the active key is %q; want the new one", active.Public)
	}
	checkErr(t, "RemoveCAKey again", s.RemoveCAKey(ctx, "ssh-user", old.Public, ev(audit.CARotationFinished, "ssh-user")), store.ErrNotFound)

	var types []audit.Type
	for _, e := range verified(t, s) {
		types = append(types, e.Type)
	}
	want := []audit.Type{audit.ClusterInit, audit.CARotationStarted, audit.CARotationActivated, audit.CARotationActivated, audit.CARotationFinished}
	if len(types) != len(want) {
		t.Fatalf("audit types = %v; want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("audit types = %v; want %v", types, want)
		}
	}

	// Certificates: the old key's latest expiry and how many still run.
	cert := func(serial string, issued, notAfter time.Time) store.IssuedCert {
		return store.IssuedCert{Serial: serial, Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User,
			NotBefore: issued, NotAfter: notAfter, IssuedAt: issued, Principals: []string{"ubuntu"}}
	}
	must(t, "RecordCertificates", s.RecordCertificates(ctx, []store.IssuedCert{
		cert("01", t0, t0.Add(time.Hour)),
		cert("02", t0.Add(10*time.Minute), t0.Add(5*time.Hour)),  // the latest before activation
		cert("03", t0.Add(20*time.Minute), t0.Add(10*time.Hour)), // revoked below
		cert("04", t0.Add(2*time.Hour), t0.Add(20*time.Hour)),    // after activation
	}, nil))
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "03", Kind: store.CertSSHUser}, t0.Add(30*time.Minute), ev(audit.CertRevoked, "03"))
	must(t, "RevokeCertificates", err)
	latest, err := s.LatestCertExpiry(ctx, store.CertSSHUser, activatedAt)
	must(t, "LatestCertExpiry", err)
	if !latest.Equal(audit.Normalize(t0.Add(5 * time.Hour))) {
		t.Errorf("LatestCertExpiry = %v; want %v (certificate 02: 03 is revoked, 04 issued after)", latest, t0.Add(5*time.Hour).UTC())
	}
	checkUTC(t, "LatestCertExpiry", latest)
	if none, err := s.LatestCertExpiry(ctx, store.CertX509, activatedAt); err != nil || !none.IsZero() {
		t.Errorf("LatestCertExpiry with no certificate = %v, %v; want zero, nil", none, err)
	}
	count, err := s.CountValidCerts(ctx, store.CertSSHUser, activatedAt, t0.Add(2*time.Hour))
	must(t, "CountValidCerts", err)
	if count != 1 {
		t.Errorf("CountValidCerts = %d; want 1 (02; 01 expired, 03 revoked, 04 issued after)", count)
	}
}
