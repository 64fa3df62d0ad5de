package apiserver_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// countingStore counts the reads of the revoked set, and passes the
// revocation stamp through.
type countingStore struct {
	store.Store
	reads atomic.Int64
}

func (c *countingStore) RevokedCertificates(ctx context.Context, now time.Time) ([]store.IssuedCert, error) {
	c.reads.Add(1)
	return c.Store.RevokedCertificates(ctx, now)
}

func (c *countingStore) RevocationStamp(ctx context.Context, since time.Time) (store.RevocationStamp, error) {
	return c.Store.(store.RevocationStamper).RevocationStamp(ctx, since)
}

// TestKRLRebuiltOnlyOnChange: anonymous fetches past the cache time read
// only the revocation stamp; the KRL is rebuilt when a certificate is
// revoked (by any gateway: the store says so) or a listed one expires. An
// unusable serial is logged once, not at every rebuild.
func TestKRLRebuiltOnlyOnChange(t *testing.T) {
	var cs *countingStore
	var logs bytes.Buffer
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) {
		cs = &countingStore{Store: a.Store}
		a.Store = cs
		a.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	c := s.client(nil)
	alice := s.recordSSHCert("alice", 0xa11ce, time.Hour)
	s.revokeSSH("alice", alice)
	// A revoked SSH certificate whose serial is no hex number.
	now := s.clock.Now()
	bad := store.IssuedCert{Serial: "not-hex", Kind: store.CertSSHUser, Subject: "mallory", SubjectKind: identity.User,
		NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now, Principals: []string{"mallory"}}
	if err := s.store.RecordCertificates(context.Background(), []store.IssuedCert{bad},
		[]audit.Event{{Time: now, Type: audit.CertIssued, Actor: "mallory", Subject: "not-hex", Outcome: audit.Success}}); err != nil {
		t.Fatal(err)
	}
	s.revokeSSH("mallory", "not-hex")

	k1, _ := s.getKRL(c)
	for range 5 {
		s.clock.Advance(3 * time.Second)
		s.getKRL(c)
	}
	if n := cs.reads.Load(); n != 1 {
		t.Errorf("6 fetches over 15 s of an unchanged set read it %d times; want 1", n)
	}

	bob := s.recordSSHCert("bob", 0xb0b, 10*time.Minute)
	s.revokeSSH("bob", bob)
	s.clock.Advance(3 * time.Second)
	k2, _ := s.getKRL(c)
	if got := revokedSerials(k2); !got[0xb0b] || !got[0xa11ce] || k2.Version <= k1.Version {
		t.Errorf("after a revocation: %v version %d; want alice and bob, a version above %d", got, k2.Version, k1.Version)
	}
	if n := cs.reads.Load(); n != 2 {
		t.Errorf("a revocation: %d reads in all; want 2", n)
	}
	s.clock.Advance(11 * time.Minute) // bob's certificate expires
	k3, _ := s.getKRL(c)
	if got := revokedSerials(k3); got[0xb0b] || !got[0xa11ce] {
		t.Errorf("after bob's certificate expired: %v; want alice's only", got)
	}
	if n := strings.Count(logs.String(), "unusable serial"); n != 1 {
		t.Errorf("the unusable serial was logged %d times over %d builds; want once", n, cs.reads.Load())
	}
}
