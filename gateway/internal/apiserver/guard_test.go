package apiserver_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/panics"
)

// foreignCert is a client certificate of no cluster: what a scanner or an
// attacker presents.
func foreignCert(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mallory"},
		NotBefore: start.Add(-time.Hour), NotAfter: start.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestAnonymousCallersAreLimitedAndTheirRefusalsFolded: renewals without a
// certificate, or with a foreign one, are charged to the source's budget
// (429 past it, with nothing written), and the refusals that get through
// are folded into one event per kind and interval. A caller with a
// certificate of the cluster is not charged on the authenticated routes,
// but is on the anonymous ones.
func TestAnonymousCallersAreLimitedAndTheirRefusalsFolded(t *testing.T) {
	var folder *auditlog.Folder
	var writer *auditlog.Writer
	s := newServer(t, func(a *apiserver.Server, clock *fakeClock) {
		a.Limiter = auth.NewIPLimiter(rate.Every(time.Hour), 4, clock.Now)
	})
	writer = auditlog.New(s.store)
	folder = auditlog.NewFolder(writer, time.Minute, s.clock.Now, nil)
	s.api.Denials = folder
	t.Cleanup(func() { folder.Close(); writer.Close() })

	s.addRole("dev", nil, false)
	s.addUser("alice", "dev")
	alice := s.client(s.issue(s.ca, "alice", time.Hour, true))
	seq := s.lastSeq()

	anon, mallory := s.client(nil), s.client(foreignCert(t))
	body := api.RenewRequest{CSR: "x", SSHHostKey: "y"}
	statuses := map[int]int{}
	for range 6 {
		statuses[s.do(anon, "POST", api.PathRenew, body).status]++
		statuses[s.do(mallory, "POST", api.PathRenew, body).status]++
	}
	if statuses[401] != 4 || statuses[429] != 8 {
		t.Fatalf("12 anonymous renewals with a budget of 4 got statuses %v; want 4×401, 8×429", statuses)
	}
	wantError(t, s.do(mallory, "GET", api.PathWhoami, nil), 429, api.CodeRateLimited)
	wantError(t, s.do(anon, "GET", api.PathNodes, nil), 429, api.CodeRateLimited)

	// The source's budget is spent, yet alice's certificate gets her in;
	// the anonymous routes stay charged for her too.
	for range 10 {
		if r := s.do(alice, "GET", api.PathWhoami, nil); r.status != 200 {
			t.Fatalf("whoami with a cluster certificate, budget spent: got %d (%s); want 200", r.status, r.body)
		}
	}
	wantError(t, s.do(alice, "GET", api.PathPing, nil), 429, api.CodeRateLimited)

	// Written at once: the first refusal of each kind (no certificate; a
	// foreign one). The repeats wait for the interval's end.
	var reasons []string
	for _, ev := range s.eventsAfter(seq) {
		reasons = append(reasons, ev.Reason+" count="+ev.Details[auditlog.DetailCount])
	}
	if len(reasons) != 2 {
		t.Fatalf("events after 4 refusals of 2 kinds: %q; want 2, one per kind", reasons)
	}
	s.clock.Advance(time.Minute)
	if err := folder.Flush(); err != nil {
		t.Fatal(err)
	}
	counts := map[string]string{}
	for _, ev := range s.eventsAfter(seq) {
		if ev.Type != audit.AgentDenied || ev.SourceIP != "127.0.0.1" {
			t.Errorf("unexpected event %+v", ev)
		}
		counts[firstWords(ev.Reason, 3)] += ev.Details[auditlog.DetailCount] + ";"
	}
	want := map[string]string{"renewal needs the": ";1;", "your certificate was": ";1;"}
	if len(counts) != 2 || counts["renewal needs the"] != want["renewal needs the"] || counts["your certificate was"] != want["your certificate was"] {
		t.Errorf("counts by reason %q; want %q (each kind: the first, then one folded)", counts, want)
	}
	s.verifyAudit()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestHandlerPanicIsContained: a handler that panics (here, login on a
// server built without a login service) answers an internal error, is
// logged with its stack and counted; the server goes on.
func TestHandlerPanicIsContained(t *testing.T) {
	logs := &syncBuffer{}
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) {
		a.Login = nil
		a.Log = slog.New(slog.NewTextHandler(logs, nil))
	})
	c := s.client(nil)
	before := panics.Count()
	wantError(t, s.do(c, "POST", api.PathLogin, api.LoginRequest{User: "alice", Password: "x", OTP: "123456"}),
		500, api.CodeInternal, "internal error")
	if got := panics.Count() - before; got != 1 {
		t.Errorf("panics.Count moved by %d; want 1", got)
	}
	out := logs.String()
	for _, want := range []string{"recovered a panic", "API request POST " + api.PathLogin, "nil pointer", "goroutine"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if r := s.do(c, "GET", api.PathPing, nil); r.status != 200 {
		t.Errorf("ping after a panic: got %d (%s); want 200", r.status, r.body)
	}
}
