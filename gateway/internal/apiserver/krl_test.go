package apiserver_test

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/sshkrl"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// recordSSHCert records an SSH user certificate of user with serial, valid
// for ttl from now, as a login would.
func (s *testServer) recordSSHCert(user string, serial uint64, ttl time.Duration) string {
	s.t.Helper()
	return s.recordCert(store.CertSSHUser, identity.User, user, serial, ttl)
}

// recordCert records a certificate of kind for subject with serial.
func (s *testServer) recordCert(kind store.CertKind, subjectKind identity.Kind, subject string, serial uint64, ttl time.Duration) string {
	s.t.Helper()
	now := s.clock.Now()
	hex := strconv.FormatUint(serial, 16)
	rec := store.IssuedCert{Serial: hex, Kind: kind, Subject: subject, SubjectKind: subjectKind,
		NotBefore: now, NotAfter: now.Add(ttl), IssuedAt: now, Principals: []string{subject}}
	ev := audit.Event{Time: now, Type: audit.CertIssued, Actor: subject, Subject: hex, Outcome: audit.Success}
	if err := s.store.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{ev}); err != nil {
		s.t.Fatalf("RecordCertificates: %v", err)
	}
	return hex
}

func (s *testServer) revokeSSH(user, serial string) {
	s.t.Helper()
	ev := audit.Event{Time: s.clock.Now(), Type: audit.CertRevoked, Actor: "admin", Subject: serial, Outcome: audit.Success}
	got, err := s.store.RevokeCertificates(context.Background(),
		store.RevokeFilter{Subject: user, SubjectKind: identity.User, Serial: serial, Kind: store.CertSSHUser}, s.clock.Now(), ev)
	if err != nil || len(got) != 1 {
		s.t.Fatalf("RevokeCertificates(%s %s) = %v, %v; want one", user, serial, got, err)
	}
}

// getKRL fetches the KRL anonymously and parses it.
func (s *testServer) getKRL(c *http.Client) (*sshkrl.KRL, response) {
	s.t.Helper()
	r := s.do(c, "GET", api.PathKRL, nil)
	if r.status != 200 {
		s.t.Fatalf("GET %s: %d %s", api.PathKRL, r.status, r.body)
	}
	k, err := sshkrl.Parse(r.body)
	if err != nil {
		s.t.Fatalf("the KRL does not parse: %v", err)
	}
	return k, r
}

func revokedSerials(k *sshkrl.KRL) map[uint64]bool {
	m := map[uint64]bool{}
	for _, s := range k.Sections {
		for _, r := range s.Serials {
			for v := r.Lo; v <= r.Hi && v != 0; v++ {
				m[v] = true
			}
		}
	}
	return m
}

// TestKRL: anyone may fetch the KRL; it names the user CA and the serials
// of revoked, unexpired SSH user certificates only (not X.509 or host
// certificates, not live ones); its version increases when a certificate is revoked and when a
// revoked one expires, and stays the same otherwise, with the same bytes
// and ETag; If-None-Match gives 304.
func TestKRL(t *testing.T) {
	s := newServer(t)
	c := s.client(nil)
	k0, r := s.getKRL(c)
	if ct, cc := r.header.Get("Content-Type"), r.header.Get("Cache-Control"); ct != api.KRLContentType || cc != "public, no-cache" {
		t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	if len(k0.Sections) != 1 || !bytes.Equal(k0.Sections[0].CA.Marshal(), s.ca.SSHUserCA().Marshal()) || len(k0.Sections[0].Serials) != 0 {
		t.Fatalf("empty KRL: %+v; want one section for the user CA, no serials", k0.Sections)
	}
	if len(k0.Sections[0].KeyIDs) != 0 {
		t.Errorf("the KRL names key ids: %v", k0.Sections[0].KeyIDs)
	}

	alice := s.recordSSHCert("alice", 0xa11ce, time.Hour)
	_ = s.recordSSHCert("bob", 0xb0b, time.Hour)
	short := s.recordSSHCert("carol", 0xca201, 10*time.Minute)
	s.issue(s.ca, "alice", time.Hour, true) // an X.509 certificate, revoked below too
	// Other kinds with serials a KRL could name, revoked below: never listed.
	s.recordCert(store.CertX509, identity.User, "alice", 0xbeef, time.Hour)
	s.recordCert(store.CertSSHHost, identity.Agent, "web-1", 0x5eed, time.Hour)
	s.clock.Advance(time.Minute)
	if _, err := s.store.RevokeCertificates(context.Background(), store.RevokeFilter{Subject: "web-1", SubjectKind: identity.Agent},
		s.clock.Now(), audit.Event{Time: s.clock.Now(), Type: audit.CertRevoked, Actor: "admin", Outcome: audit.Success}); err != nil {
		t.Fatal(err)
	}
	k0, _ = s.getKRL(c) // cached from now for two seconds
	if _, err := s.store.RevokeCertificates(context.Background(), store.RevokeFilter{Subject: "alice", SubjectKind: identity.User},
		s.clock.Now(), audit.Event{Time: s.clock.Now(), Type: audit.CertRevoked, Actor: "admin", Outcome: audit.Success}); err != nil {
		t.Fatal(err)
	}
	s.revokeSSH("carol", short)
	revokedAt := s.clock.Now()

	// Within the cache's two seconds the old answer stands.
	if k, _ := s.getKRL(c); k.Version != k0.Version {
		t.Errorf("the KRL changed within its cache time")
	}
	s.clock.Advance(3 * time.Second)
	k1, r1 := s.getKRL(c)
	if got, want := revokedSerials(k1), map[uint64]bool{0xa11ce: true, 0xca201: true}; len(got) != len(want) || !got[0xa11ce] || !got[0xca201] {
		t.Errorf("revoked serials %v; want alice's and carol's SSH certificates (%s, %s)", got, alice, short)
	}
	if k1.Version <= k0.Version || k1.Version != uint64(revokedAt.UnixMilli()) {
		t.Errorf("version %d after a revocation (was %d); want the revocation's time %d", k1.Version, k0.Version, revokedAt.UnixMilli())
	}

	// Unchanged set: same bytes, same ETag; revalidation is 304.
	s.clock.Advance(3 * time.Second)
	_, r2 := s.getKRL(c)
	if !bytes.Equal(r1.body, r2.body) || r1.header.Get("ETag") == "" || r1.header.Get("ETag") != r2.header.Get("ETag") {
		t.Errorf("the same revoked set gave different answers (ETag %q, %q)", r1.header.Get("ETag"), r2.header.Get("ETag"))
	}
	req, _ := http.NewRequest("GET", s.ts.URL+api.PathKRL, nil)
	req.Header.Set("If-None-Match", r1.header.Get("ETag"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the current ETag: %d; want 304", resp.StatusCode)
	}

	// Carol's certificate expires: it leaves the list, the version moves
	// to its expiry.
	s.clock.Advance(10 * time.Minute)
	k3, r3 := s.getKRL(c)
	if got := revokedSerials(k3); len(got) != 1 || !got[0xa11ce] {
		t.Errorf("after carol's certificate expired: %v; want alice's only", got)
	}
	if k3.Version <= k1.Version {
		t.Errorf("version %d after an expiry; want more than %d", k3.Version, k1.Version)
	}
	if r3.header.Get("ETag") == r1.header.Get("ETag") {
		t.Errorf("the ETag did not change with the set")
	}
}

// TestKRLRateLimited: anonymous KRL fetches are charged to the anonymous
// budget like the CA bundle.
func TestKRLRateLimited(t *testing.T) {
	s := newServer(t, func(a *apiserver.Server, clock *fakeClock) {
		a.Limiter = auth.NewIPLimiter(rate.Every(time.Minute), 2, clock.Now)
	})
	c := s.client(nil)
	for i := range 2 {
		if r := s.do(c, "GET", api.PathKRL, nil); r.status != 200 {
			t.Fatalf("request %d: %d; want 200", i+1, r.status)
		}
	}
	wantError(t, s.do(c, "GET", api.PathKRL, nil), 429, api.CodeRateLimited)
}
