package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// TestKRLRevocationStamp: both stores' store.RevocationStamp, which the
// KRL endpoint reads instead of rebuilding, changes with a revocation and
// not otherwise, and counts only certificates expiring after its since.
func TestKRLRevocationStamp(t *testing.T) {
	ctx := context.Background()
	sq, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	dbs := newPGDatabases(t, pgtest.Start(t))
	pg := openPGStore(t, dbs.url(dbs.create(t)))
	for name, st := range map[string]store.Store{"sqlite": sq, "postgres": pg} {
		t.Run(name, func(t *testing.T) {
			stamper, ok := st.(store.RevocationStamper)
			if !ok {
				t.Fatal("the store offers no RevocationStamp")
			}
			now := time.Now().UTC().Truncate(time.Second)
			stamp := func(since time.Time) store.RevocationStamp {
				t.Helper()
				s, err := stamper.RevocationStamp(ctx, since)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			if s := stamp(now); s != (store.RevocationStamp{}) {
				t.Fatalf("empty store: %+v", s)
			}
			var recs []store.IssuedCert
			var evs []audit.Event
			for _, serial := range []string{"a1", "b2"} {
				recs = append(recs, store.IssuedCert{Serial: serial, Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User,
					NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now, Principals: []string{"alice"}})
				evs = append(evs, audit.Event{Time: now, Type: audit.CertIssued, Actor: "alice", Subject: serial, Outcome: audit.Success})
			}
			if err := st.RecordCertificates(ctx, recs, evs); err != nil {
				t.Fatal(err)
			}
			if s := stamp(now); s != (store.RevocationStamp{}) {
				t.Fatalf("nothing revoked: %+v", s)
			}
			revoke := func(serial string, at time.Time) {
				t.Helper()
				if _, err := st.RevokeCertificates(ctx, store.RevokeFilter{Subject: "alice", SubjectKind: identity.User, Serial: serial, Kind: store.CertSSHUser},
					at, audit.Event{Time: at, Type: audit.CertRevoked, Actor: "admin", Subject: serial, Outcome: audit.Success}); err != nil {
					t.Fatal(err)
				}
			}
			revoke("a1", now.Add(time.Minute))
			s1 := stamp(now)
			if s1.Count != 1 || s1.LastRevoked != now.Add(time.Minute).UnixMicro() {
				t.Errorf("one revoked: %+v; want count 1 at %d", s1, now.Add(time.Minute).UnixMicro())
			}
			if s := stamp(now); s != s1 {
				t.Errorf("unchanged: %+v then %+v", s1, s)
			}
			revoke("b2", now.Add(2*time.Minute))
			if s := stamp(now); s.Count != 2 || s.LastRevoked != now.Add(2*time.Minute).UnixMicro() {
				t.Errorf("two revoked: %+v", s)
			}
			if s := stamp(now.Add(2 * time.Hour)); s.Count != 0 {
				t.Errorf("since after their expiry: %+v; want none", s)
			}
		})
	}
}
