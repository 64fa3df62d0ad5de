package storetest

import (
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testCertChanges: RevokeCertificates emits one ChangeCert per certificate
// it revokes (ID CertChangeID(kind, serial), Subject the certificate's
// subject), by kind and serial, so that every gateway can close what the
// certificates authenticated; a revocation that finds nothing to revoke,
// and one that fails, emit nothing.
func testCertChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := t0.Add(time.Hour)
	live := now.Add(6 * time.Hour)
	cert := func(kind store.CertKind, serial, subject string, sk identity.Kind, notAfter time.Time) store.IssuedCert {
		return store.IssuedCert{Serial: serial, Kind: kind, Subject: subject, SubjectKind: sk, NotBefore: t0, NotAfter: notAfter,
			IssuedAt: t0, Principals: []string{subject}}
	}
	must(t, "RecordCertificates", s.RecordCertificates(ctx, []store.IssuedCert{
		cert(store.CertX509, "0a", "web-1", identity.Agent, live),
		cert(store.CertSSHHost, "0b", "web-1", identity.Agent, live),
		cert(store.CertX509, "0c", "web-1", identity.Agent, now.Add(-time.Minute)), // expired: not revoked again
		cert(store.CertX509, "1a", "alice", identity.User, live),
		cert(store.CertSSHUser, "1b", "alice", identity.User, live),
	}, []audit.Event{ev(audit.CertIssued, "batch")}))

	w := watch(t, s)
	next := w.next
	certChange := func(kind store.CertKind, serial, subject string) store.Change {
		return store.Change{Kind: store.ChangeCert, ID: store.CertChangeID(kind, serial), Subject: subject}
	}

	// An agent enrolled again: its earlier identity's certificates, each.
	_, err := s.RevokeCertificates(ctx, store.RevokeFilter{Subject: "web-1", SubjectKind: identity.Agent}, now, ev(audit.CertRevoked, "web-1"))
	must(t, "RevokeCertificates web-1", err)
	next(certChange(store.CertSSHHost, "0b", "web-1"))
	next(certChange(store.CertX509, "0a", "web-1"))

	// Nothing left to revoke, and a refused revocation: no change. The
	// next change is the one of the revocation by serial.
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Subject: "web-1", SubjectKind: identity.Agent}, now, ev(audit.CertRevoked, "web-1"))
	must(t, "RevokeCertificates web-1 again", err)
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "ffff"}, now, ev(audit.CertRevoked, "ffff"))
	checkErr(t, "RevokeCertificates of an unknown serial", err, store.ErrNotFound)
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "1b", Kind: store.CertSSHUser}, now, ev(audit.CertRevoked, "1b"))
	must(t, "RevokeCertificates 1b", err)
	next(certChange(store.CertSSHUser, "1b", "alice"))

	// The IDs parse back.
	kind, serial, ok := store.ParseCertChangeID(store.CertChangeID(store.CertX509, "1a"))
	if !ok || kind != store.CertX509 || serial != "1a" {
		t.Errorf("ParseCertChangeID(CertChangeID(x509, 1a)) = %q, %q, %v", kind, serial, ok)
	}
	for _, bad := range []string{"", "x509", "x509:", ":1a"} {
		if _, _, ok := store.ParseCertChangeID(bad); ok {
			t.Errorf("ParseCertChangeID(%q) accepted it", bad)
		}
	}
}
