package apiserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// fakePresence stands in for the relay.
type fakePresence struct {
	mu     sync.Mutex
	agents map[string]api.Agent
}

func (p *fakePresence) Online() map[string]api.Agent {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]api.Agent, len(p.agents))
	for k, v := range p.agents {
		out[k] = v
	}
	return out
}

func (p *fakePresence) connect(name string, since time.Time, services ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.agents == nil {
		p.agents = map[string]api.Agent{}
	}
	p.agents[name] = api.Agent{Name: name, Online: true, Since: &since, Services: services}
}

// agentKey is an agent's key pair as enrolment and renewal send it.
type agentKey struct {
	priv    ed25519.PrivateKey
	csr     string
	hostKey string
}

func newAgentKey(t *testing.T) agentKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, priv)
	if err != nil {
		t.Fatal(err)
	}
	// The SSH host key is a key of its own.
	hostPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	return agentKey{priv: priv,
		csr:     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		hostKey: string(ssh.MarshalAuthorizedKey(sshPub))}
}

func (k agentKey) enroll(token string) api.EnrollRequest {
	return api.EnrollRequest{Token: token, CSR: k.csr, SSHHostKey: k.hostKey}
}

// tlsCert returns the identity's X.509 certificate with the key's private
// key, to present for renewal.
func (k agentKey) tlsCert(t *testing.T, id api.AgentIdentity) *tls.Certificate {
	t.Helper()
	c := parseCert(t, id.X509Certificate)
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k.priv, Leaf: c}
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		t.Fatalf("no PEM block in %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *testServer) createToken(c *http.Client, agent string, ttl time.Duration) api.Token {
	s.t.Helper()
	r := s.do(c, "POST", api.PathTokens, api.CreateTokenRequest{Agent: agent, TTL: api.Duration(ttl)})
	if r.status != http.StatusCreated {
		s.t.Fatalf("create token for %s: got %d (%s); want 201", agent, r.status, r.body)
	}
	var tok api.Token
	r.decode(s.t, &tok)
	return tok
}

func (s *testServer) enrollOK(c *http.Client, req api.EnrollRequest) api.AgentIdentity {
	s.t.Helper()
	r := s.do(c, "POST", api.PathEnroll, req)
	if r.status != 200 {
		s.t.Fatalf("enrol: got %d (%s); want 200", r.status, r.body)
	}
	var id api.AgentIdentity
	r.decode(s.t, &id)
	return id
}

// storeAgent enrols an agent directly in the store.
func (s *testServer) storeAgent(name string) {
	s.t.Helper()
	ctx := context.Background()
	h := sha256.Sum256([]byte("token for " + name))
	hash := hex.EncodeToString(h[:])
	now := s.clock.Now()
	ev := audit.Event{Time: now, Type: audit.TokenCreated, Actor: "system", Subject: name, Outcome: audit.Success}
	if err := s.store.CreateJoinToken(ctx, store.JoinToken{Hash: hash, Agent: name, CreatedBy: "system", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, ev); err != nil {
		s.t.Fatalf("CreateJoinToken: %v", err)
	}
	ev.Type = audit.AgentEnrolled
	if _, err := s.store.ConsumeJoinToken(ctx, hash, now, ev); err != nil {
		s.t.Fatalf("ConsumeJoinToken: %v", err)
	}
}

// eventsAfter returns the events after seq.
func (s *testServer) eventsAfter(seq int64) []audit.Event {
	s.t.Helper()
	evs, err := s.store.ListAudit(context.Background(), store.AuditFilter{AfterSeq: seq})
	if err != nil {
		s.t.Fatal(err)
	}
	return evs
}

func (s *testServer) lastSeq() int64 {
	s.t.Helper()
	evs := s.eventsAfter(0)
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// TestEnrollStory: an admin makes a join token, the agent enrols once,
// and every misuse of a token is refused and audited.
func TestEnrollStory(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	anon := s.client(nil)

	tok := s.createToken(admin, " DB-1 ", 0)
	if !strings.HasPrefix(tok.Token, "tjt_") || len(tok.Token) != 4+43 {
		t.Errorf("got token %q; want tjt_ and 43 base64url characters", tok.Token)
	}
	if tok.Agent != "db-1" || !tok.ExpiresAt.Equal(s.clock.Now().Add(30*time.Minute)) {
		t.Errorf("got %+v; want agent db-1 expiring in 30m", tok)
	}

	// Token requests that are refused.
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
		frag   string
	}{
		{"too long", api.CreateTokenRequest{Agent: "db-1", TTL: api.Duration(25 * time.Hour)}, 400, api.CodeTTLTooLong, "maximum of 24h"},
		{"too short", api.CreateTokenRequest{Agent: "db-1", TTL: api.Duration(time.Second)}, 400, api.CodeBadRequest, "shorter than a minute"},
		{"bad name", api.CreateTokenRequest{Agent: "db 1"}, 400, api.CodeBadRequest, "agent name"},
		{"no name", api.CreateTokenRequest{}, 400, api.CodeBadRequest, "agent name is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(admin, "POST", api.PathTokens, tc.body), tc.status, tc.code, tc.frag)
		})
	}

	// A malformed request does not use the token up.
	key := newAgentKey(t)
	bad := key.enroll(tok.Token)
	bad.CSR = "not a CSR"
	wantError(t, s.do(anon, "POST", api.PathEnroll, bad), 400, api.CodeBadRequest, "certificate request")
	bad = key.enroll(tok.Token)
	bad.SSHHostKey = "ssh-rsa AAAA"
	wantError(t, s.do(anon, "POST", api.PathEnroll, bad), 400, api.CodeBadRequest, "SSH host key")

	id := s.enrollOK(anon, key.enroll(tok.Token))
	now := s.clock.Now()
	xc := parseCert(t, id.X509Certificate)
	if len(xc.URIs) != 1 || xc.URIs[0].String() != "tunnel://prod/agent/db-1" {
		t.Errorf("got URI SANs %v; want tunnel://prod/agent/db-1", xc.URIs)
	}
	if !xc.NotAfter.Equal(now.Add(certs.DefaultMachineTTL)) || !id.NotAfter.Equal(xc.NotAfter) {
		t.Errorf("got NotAfter %v (answer says %v); want %v", xc.NotAfter, id.NotAfter, now.Add(certs.DefaultMachineTTL))
	}
	if !slices.Contains(xc.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("got key usages %v; want client auth", xc.ExtKeyUsage)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(id.SSHHostCertificate))
	if err != nil {
		t.Fatalf("parse SSH host certificate %q: %v", id.SSHHostCertificate, err)
	}
	hc, ok := pub.(*ssh.Certificate)
	if !ok || hc.CertType != ssh.HostCert {
		t.Fatalf("got %T; want an SSH host certificate", pub)
	}
	if diff := cmp.Diff([]string{"db-1", "db-1.prod"}, hc.ValidPrincipals); diff != "" {
		t.Errorf("host principals (-want +got):\n%s", diff)
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key.hostKey))
	if err != nil {
		t.Fatal(err)
	}
	if string(hc.Key.Marshal()) != string(hostKey.Marshal()) {
		t.Errorf("the host certificate does not certify the agent's host key")
	}
	if id.Agent != "db-1" || id.CA.Pin != s.ca.Pin() || id.CA.Cluster != cluster || len(id.CA.SSHHostCAs) != 1 {
		t.Errorf("got agent %q and CA %+v; want db-1 and the cluster's bundle", id.Agent, id.CA)
	}
	ctx := context.Background()
	if a, err := s.store.GetAgent(ctx, "db-1"); err != nil || !a.EnrolledAt.Equal(now) {
		t.Errorf("GetAgent(db-1): got %+v, %v; want enrolled at %v", a, err, now)
	}
	for _, rec := range []struct {
		kind   store.CertKind
		serial string
	}{{store.CertX509, certs.X509SerialHex(xc)}, {store.CertSSHHost, certs.SSHSerialHex(hc)}} {
		if c, err := s.store.GetCertificate(ctx, rec.kind, rec.serial); err != nil || c.Subject != "db-1" {
			t.Errorf("GetCertificate(%s, %s): got %+v, %v; want a record for db-1", rec.kind, rec.serial, c, err)
		}
	}

	// The same token again.
	wantError(t, s.do(anon, "POST", api.PathEnroll, newAgentKey(t).enroll(tok.Token)), 401, api.CodeUnauthenticated,
		"already used", "tunnel admin tokens create --agent db-1")
	// A token nobody made.
	wantError(t, s.do(anon, "POST", api.PathEnroll, key.enroll("tjt_nosuchtoken")), 401, api.CodeUnauthenticated,
		"unknown join token: check you copied it whole")
	wantError(t, s.do(anon, "POST", api.PathEnroll, key.enroll("")), 400, api.CodeBadRequest, "no join token")
	// An expired token.
	old := s.createToken(admin, "db-2", 10*time.Minute)
	s.clock.Advance(11 * time.Minute)
	wantError(t, s.do(anon, "POST", api.PathEnroll, key.enroll(old.Token)), 401, api.CodeUnauthenticated, "expired", "1m ago")

	// A locked agent: no new token, and a token made before the lock is
	// refused until the agent is unlocked.
	pending := s.createToken(admin, "db-1", 0)
	if r := s.do(admin, "POST", api.PathAgents+"/db-1/lock", nil); r.status != 204 {
		t.Fatalf("lock: got %d (%s); want 204", r.status, r.body)
	}
	wantError(t, s.do(admin, "POST", api.PathTokens, api.CreateTokenRequest{Agent: "db-1"}), 409, api.CodeConflict, "locked", "agents unlock db-1")
	wantError(t, s.do(anon, "POST", api.PathEnroll, key.enroll(pending.Token)), 403, api.CodeForbidden, "locked")
	if r := s.do(admin, "POST", api.PathAgents+"/db-1/unlock", nil); r.status != 204 {
		t.Fatalf("unlock: got %d (%s); want 204", r.status, r.body)
	}
	s.enrollOK(anon, key.enroll(pending.Token))

	// The audit log tells the story and never holds a token.
	evs := s.eventsAfter(0)
	var got []string
	for _, ev := range evs {
		j, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{tok.Token, old.Token, pending.Token, "tjt_nosuchtoken"} {
			if strings.Contains(string(j), secret) {
				t.Errorf("event %s holds a join token", j)
			}
		}
		switch ev.Type {
		case audit.TokenCreated, audit.AgentEnrolled, audit.AgentDenied, audit.AgentLocked, audit.AgentUnlocked:
			got = append(got, strings.TrimSpace(string(ev.Type)+" "+firstWords(ev.Reason, 4)))
		}
	}
	want := []string{
		"token.created",
		"agent.denied certificate request: parse CSR:",
		"agent.denied SSH host key: parse",
		"agent.enrolled",
		"agent.denied join token already used",
		"agent.denied unknown join token: check",
		"agent.denied no join token: create",
		"token.created",
		"agent.denied join token expired 1m",
		"token.created",
		"agent.locked",
		"agent.denied agent db-1 is locked",
		"agent.unlocked",
		"agent.enrolled",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("agent events (-want +got):\n%s", diff)
	}
	s.verifyAudit()
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

func TestEnrollRateLimited(t *testing.T) {
	s := newServer(t, func(a *apiserver.Server, clock *fakeClock) {
		a.Limiter = auth.NewIPLimiter(rate.Every(time.Minute), 1, clock.Now)
	})
	anon := s.client(nil)
	key := newAgentKey(t)
	wantError(t, s.do(anon, "POST", api.PathEnroll, key.enroll("tjt_guess1")), 401, api.CodeUnauthenticated, "unknown join token")
	wantError(t, s.do(anon, "POST", api.PathEnroll, key.enroll("tjt_guess2")), 429, api.CodeRateLimited)
}

func TestRenew(t *testing.T) {
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) { a.AgentTTL = 2 * time.Hour })
	admin := s.admin()
	anon := s.client(nil)
	key := newAgentKey(t)
	id := s.enrollOK(anon, key.enroll(s.createToken(admin, "db-1", 0).Token))
	if want := s.clock.Now().Add(2 * time.Hour); !id.NotAfter.Equal(want) {
		t.Errorf("got NotAfter %v; want AgentTTL later, %v", id.NotAfter, want)
	}
	agent := s.client(key.tlsCert(t, id))

	s.clock.Advance(40 * time.Minute)
	seq := s.lastSeq()
	next := newAgentKey(t)
	r := s.do(agent, "POST", api.PathRenew, api.RenewRequest{CSR: next.csr, SSHHostKey: next.hostKey})
	if r.status != 200 {
		t.Fatalf("renew: got %d (%s); want 200", r.status, r.body)
	}
	var renewed api.AgentIdentity
	r.decode(t, &renewed)
	oldCert, newCert := parseCert(t, id.X509Certificate), parseCert(t, renewed.X509Certificate)
	if newCert.SerialNumber.Cmp(oldCert.SerialNumber) == 0 {
		t.Errorf("renewal returned the same serial %s", certs.X509SerialHex(newCert))
	}
	if !newCert.PublicKey.(ed25519.PublicKey).Equal(next.priv.Public()) {
		t.Errorf("the renewed certificate does not certify the new key")
	}
	if want := s.clock.Now().Add(2 * time.Hour); !newCert.NotAfter.Equal(want) || renewed.Agent != "db-1" {
		t.Errorf("got agent %q NotAfter %v; want db-1, %v", renewed.Agent, newCert.NotAfter, want)
	}
	var types []string
	for _, ev := range s.eventsAfter(seq) {
		types = append(types, string(ev.Type)+" "+ev.Actor+" "+ev.Details["kind"])
	}
	if diff := cmp.Diff([]string{"cert.issued db-1 x509", "cert.issued db-1 ssh-host", "agent.renewed db-1 "}, types); diff != "" {
		t.Errorf("renewal events (-want +got):\n%s", diff)
	}

	// The renewed certificate renews in turn.
	agent2 := s.client(next.tlsCert(t, renewed))
	if r := s.do(agent2, "POST", api.PathRenew, api.RenewRequest{CSR: next.csr, SSHHostKey: next.hostKey}); r.status != 200 {
		t.Errorf("renew with the renewed certificate: got %d (%s); want 200", r.status, r.body)
	}

	// Refusals.
	s.addRole("dev", nil, false)
	s.addUser("alice", "dev")
	user := s.client(s.issue(s.ca, "alice", time.Hour, true))
	body := api.RenewRequest{CSR: next.csr, SSHHostKey: next.hostKey}
	wantError(t, s.do(user, "POST", api.PathRenew, body), 401, api.CodeUnauthenticated, "user certificate cannot be used")
	wantError(t, s.do(anon, "POST", api.PathRenew, body), 401, api.CodeUnauthenticated, "current certificate", "join token")
	wantError(t, s.do(agent2, "POST", api.PathRenew, api.RenewRequest{CSR: "junk", SSHHostKey: next.hostKey}), 400, api.CodeBadRequest, "certificate request")
	// An agent certificate the gateway never recorded.
	forged, err := s.ca.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: cluster, Kind: identity.Agent, Name: "db-1"}, PublicKey: next.priv.Public()})
	if err != nil {
		t.Fatal(err)
	}
	unrecorded := s.client(&tls.Certificate{Certificate: [][]byte{forged.Raw}, PrivateKey: next.priv})
	wantError(t, s.do(unrecorded, "POST", api.PathRenew, body), 401, api.CodeUnauthenticated, "no record")
	// A locked agent.
	if r := s.do(admin, "POST", api.PathAgents+"/db-1/lock", nil); r.status != 204 {
		t.Fatalf("lock: got %d (%s)", r.status, r.body)
	}
	wantError(t, s.do(agent2, "POST", api.PathRenew, body), 401, api.CodeUnauthenticated, "locked")
	// An expired certificate.
	if r := s.do(admin, "POST", api.PathAgents+"/db-1/unlock", nil); r.status != 204 {
		t.Fatalf("unlock: got %d (%s)", r.status, r.body)
	}
	s.clock.Advance(3 * time.Hour)
	wantError(t, s.do(agent2, "POST", api.PathRenew, body), 401, api.CodeUnauthenticated, "expired")

	denied := 0
	for _, ev := range s.eventsAfter(seq) {
		if ev.Type == audit.AgentDenied {
			denied++
		}
	}
	if denied != 5 {
		t.Errorf("got %d agent.denied events; want 5 (user, none, unrecorded, locked, expired)", denied)
	}
	s.verifyAudit()
}

func TestAgentsList(t *testing.T) {
	presence := &fakePresence{}
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) { a.Presence = presence })
	admin := s.admin()
	s.storeAgent("db-1")
	s.storeAgent("web-1")
	s.storeAgent("old-1")
	seen := s.clock.Now().Add(-time.Hour)
	if err := s.store.TouchAgent(context.Background(), "old-1", seen); err != nil {
		t.Fatal(err)
	}
	since := s.clock.Now().Add(-time.Minute)
	presence.connect("db-1", since, "mysql", "postgres")
	db1 := presence.agents["db-1"]
	db1.TrustEpoch = 42 // the trust bundle it says it holds
	presence.agents["db-1"] = db1
	presence.connect("ghost", since, "x") // connected but not in the store: not listed

	if r := s.do(admin, "POST", api.PathAgents+"/web-1/lock", nil); r.status != 204 {
		t.Fatalf("lock: got %d (%s)", r.status, r.body)
	}
	wantError(t, s.do(admin, "POST", api.PathAgents+"/nosuch/lock", nil), 404, api.CodeNotFound, "no agent nosuch")
	wantError(t, s.do(admin, "POST", api.PathAgents+"/Bad%20Name/unlock", nil), 400, api.CodeBadRequest, "agent name")

	r := s.do(admin, "GET", api.PathAgents, nil)
	if r.status != 200 {
		t.Fatalf("list agents: got %d (%s)", r.status, r.body)
	}
	var agents []api.Agent
	r.decode(t, &agents)
	now := s.clock.Now()
	want := []api.Agent{
		{Name: "db-1", Online: true, Since: &since, Services: []string{"mysql", "postgres"}, CreatedAt: now, EnrolledAt: now, TrustEpoch: 42},
		{Name: "old-1", Services: []string{}, LastSeen: &seen, CreatedAt: now, EnrolledAt: now},
		{Name: "web-1", Locked: true, Services: []string{}, CreatedAt: now, EnrolledAt: now},
	}
	if diff := cmp.Diff(want, agents); diff != "" {
		t.Errorf("agents (-want +got):\n%s", diff)
	}

	// Without a Presence, every agent is offline.
	s.api.Presence = nil
	r = s.do(admin, "GET", api.PathAgents, nil)
	r.decode(t, &agents)
	for _, a := range agents {
		if a.Online {
			t.Errorf("got %+v online with no presence", a)
		}
	}
}

func TestPolicy(t *testing.T) {
	var mu sync.Mutex
	var reloads int
	var reloadErr error
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) {
		a.PolicyChanged = func(ctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			reloads++
			return reloadErr
		}
	})
	reloaded := func() int {
		mu.Lock()
		defer mu.Unlock()
		return reloads
	}
	admin := s.admin()

	r := s.do(admin, "POST", api.PathPolicy, api.PolicyRule{Effect: "allow", From: "App-1", To: "DB-1/postgres"})
	if r.status != http.StatusCreated {
		t.Fatalf("add rule: got %d (%s); want 201", r.status, r.body)
	}
	var rule api.PolicyRule
	r.decode(t, &rule)
	if diff := cmp.Diff(api.PolicyRule{ID: 1, Effect: "allow", From: "app-1", To: "db-1/postgres", CreatedBy: "boss", CreatedAt: s.clock.Now()}, rule); diff != "" {
		t.Errorf("added rule (-want +got):\n%s", diff)
	}
	if got := reloaded(); got != 1 {
		t.Errorf("got %d reloads after an add; want 1", got)
	}
	if r := s.do(admin, "POST", api.PathPolicy, api.PolicyRule{Effect: "deny", From: "web-*", To: "*/*"}); r.status != http.StatusCreated {
		t.Fatalf("add deny rule: got %d (%s); want 201", r.status, r.body)
	}

	for _, tc := range []struct {
		name string
		rule api.PolicyRule
		code string
		frag string
	}{
		{"bad effect", api.PolicyRule{Effect: "permit", From: "a", To: "b/c"}, api.CodeBadRequest, "neither allow nor deny"},
		{"to without service", api.PolicyRule{Effect: "allow", From: "a", To: "db-1"}, api.CodeBadRequest, "NODE/SERVICE"},
		{"to with two slashes", api.PolicyRule{Effect: "allow", From: "a", To: "db-1/x/y"}, api.CodeBadRequest, "NODE/SERVICE"},
		{"malformed to", api.PolicyRule{Effect: "allow", From: "a", To: "db-[/x"}, api.CodeBadRequest, "malformed"},
		{"bad from", api.PolicyRule{Effect: "allow", From: "a/b", To: "db-1/x"}, api.CodeBadRequest, "agent"},
		{"empty from", api.PolicyRule{Effect: "allow", To: "db-1/x"}, api.CodeBadRequest, "agent name is empty"},
		{"id given", api.PolicyRule{ID: 7, Effect: "allow", From: "a", To: "db-1/x"}, api.CodeBadRequest, "sets its id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(admin, "POST", api.PathPolicy, tc.rule), 400, tc.code, tc.frag)
		})
	}
	wantError(t, s.do(admin, "POST", api.PathPolicy, api.PolicyRule{Effect: "allow", From: "app-1", To: "db-1/postgres"}), 409, api.CodeConflict, "already exists")
	if got := reloaded(); got != 2 {
		t.Errorf("got %d reloads; want 2 (refused changes reload nothing)", got)
	}

	r = s.do(admin, "GET", api.PathPolicy, nil)
	var rules []api.PolicyRule
	r.decode(t, &rules)
	var got []string
	for _, ru := range rules {
		got = append(got, ru.Effect+" "+ru.From+" "+ru.To)
	}
	if diff := cmp.Diff([]string{"allow app-1 db-1/postgres", "deny web-* */*"}, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}

	if r := s.do(admin, "DELETE", api.PathPolicy+"/1", nil); r.status != http.StatusNoContent {
		t.Fatalf("remove rule: got %d (%s); want 204", r.status, r.body)
	}
	if got := reloaded(); got != 3 {
		t.Errorf("got %d reloads after a removal; want 3", got)
	}
	wantError(t, s.do(admin, "DELETE", api.PathPolicy+"/1", nil), 404, api.CodeNotFound, "no policy rule 1")
	wantError(t, s.do(admin, "DELETE", api.PathPolicy+"/one", nil), 400, api.CodeBadRequest, "not a rule id")

	// A reload that fails says the change was made.
	mu.Lock()
	reloadErr = errors.New("relay busy")
	mu.Unlock()
	wantError(t, s.do(admin, "POST", api.PathPolicy, api.PolicyRule{Effect: "allow", From: "*", To: "db-1/*"}), 500, api.CodeInternal, "rule 3 was added", "not in effect")

	var changes []string
	for _, ev := range s.eventsAfter(0) {
		if ev.Type == audit.PolicyAdded || ev.Type == audit.PolicyRemoved {
			changes = append(changes, string(ev.Type)+" "+ev.Subject+" "+ev.Details["to"])
		}
	}
	want := []string{"policy.added allow app-1 -> db-1/postgres db-1/postgres", "policy.added deny web-* -> */* */*",
		"policy.removed 1 db-1/postgres", "policy.added allow * -> db-1/* db-1/*"}
	if diff := cmp.Diff(want, changes); diff != "" {
		t.Errorf("policy events (-want +got):\n%s", diff)
	}

	// Only admins.
	s.addRole("dev", nil, false)
	s.addUser("alice", "dev")
	user := s.client(s.issue(s.ca, "alice", time.Hour, true))
	wantError(t, s.do(user, "GET", api.PathPolicy, nil), 403, api.CodeForbidden, "admin role")
	wantError(t, s.do(user, "POST", api.PathTokens, api.CreateTokenRequest{Agent: "x"}), 403, api.CodeForbidden, "admin role")
	wantError(t, s.do(user, "GET", api.PathAgents, nil), 403, api.CodeForbidden, "admin role")
	s.verifyAudit()
}

func TestRolesNodesAndServices(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	r := s.do(admin, "POST", api.PathRoles, api.Role{Name: "dba", Nodes: []string{"DB-*", "db-1", "db-*"},
		Services: []string{"db-1/postgres", "DB-*/mysql", "db-1/postgres"}})
	if r.status != http.StatusCreated {
		t.Fatalf("create role: got %d (%s); want 201", r.status, r.body)
	}
	var role api.Role
	r.decode(t, &role)
	want := api.Role{Name: "dba", Logins: []string{}, Nodes: []string{"db-*", "db-1"}, Services: []string{"db-*/mysql", "db-1/postgres"}, CreatedAt: s.clock.Now()}
	if diff := cmp.Diff(want, role); diff != "" {
		t.Errorf("created role (-want +got):\n%s", diff)
	}
	r = s.do(admin, "GET", api.PathRoles, nil)
	var roles []api.Role
	r.decode(t, &roles)
	i := slices.IndexFunc(roles, func(r api.Role) bool { return r.Name == "dba" })
	if i < 0 {
		t.Fatalf("dba not in %+v", roles)
	}
	if diff := cmp.Diff(want, roles[i]); diff != "" {
		t.Errorf("listed role (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name string
		role api.Role
		frag string
	}{
		{"service without slash", api.Role{Name: "x", Services: []string{"postgres"}}, "NODE/SERVICE"},
		{"malformed service", api.Role{Name: "x", Services: []string{"db-1/[x"}}, "malformed"},
		{"node with slash", api.Role{Name: "x", Nodes: []string{"db/1"}}, "node"},
		{"malformed node", api.Role{Name: "x", Nodes: []string{"db-["}}, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(admin, "POST", api.PathRoles, tc.role), 400, api.CodeBadRequest, tc.frag)
		})
	}
}

func TestNodes(t *testing.T) {
	presence := &fakePresence{}
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) { a.Presence = presence })
	admin := s.admin()
	for _, name := range []string{"db-1", "db-2", "db-3", "web-1"} {
		s.storeAgent(name)
	}
	now := s.clock.Now()
	presence.connect("db-1", now, "mysql", "postgres")
	presence.connect("db-3", now, "postgres")
	presence.connect("web-1", now, "http")
	// db-2 is offline.

	ctx := context.Background()
	addRole := func(r store.Role) {
		t.Helper()
		ev := audit.Event{Time: now, Type: audit.RoleCreated, Actor: "system", Subject: r.Name, Outcome: audit.Success}
		if err := s.store.CreateRole(ctx, r, ev); err != nil {
			t.Fatal(err)
		}
	}
	addRole(store.Role{Name: "pg1", Services: []string{"db-1/postgres"}})
	addRole(store.Role{Name: "pgall", Services: []string{"db-*/postgres"}})
	addRole(store.Role{Name: "web", Nodes: []string{"web-*"}})
	addRole(store.Role{Name: "none"})
	s.addUser("alice", "pg1")
	s.addUser("bob", "pgall")
	s.addUser("carol", "web", "pg1")
	s.addUser("dave", "none")

	list := func(c *http.Client) []api.Node {
		t.Helper()
		r := s.do(c, "GET", api.PathNodes, nil)
		if r.status != 200 {
			t.Fatalf("list nodes: got %d (%s); want 200", r.status, r.body)
		}
		var nodes []api.Node
		r.decode(t, &nodes)
		return nodes
	}
	tests := []struct {
		user string
		want []api.Node
	}{
		{"alice", []api.Node{{Name: "db-1", Online: true, Services: []string{"postgres"}}}},
		{"bob", []api.Node{
			{Name: "db-1", Online: true, Services: []string{"postgres"}},
			{Name: "db-2", Services: []string{}}, // offline: its services are unknown
			{Name: "db-3", Online: true, Services: []string{"postgres"}},
		}},
		{"carol", []api.Node{
			{Name: "db-1", Online: true, Services: []string{"postgres"}},
			{Name: "web-1", Online: true, Services: []string{}},
		}},
		{"dave", []api.Node{}},
	}
	for _, tc := range tests {
		t.Run(tc.user, func(t *testing.T) {
			got := list(s.client(s.issue(s.ca, tc.user, time.Hour, true)))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("nodes of %s (-want +got):\n%s", tc.user, diff)
			}
		})
	}
	want := []api.Node{
		{Name: "db-1", Online: true, Services: []string{"mysql", "postgres"}},
		{Name: "db-2", Services: []string{}},
		{Name: "db-3", Online: true, Services: []string{"postgres"}},
		{Name: "web-1", Online: true, Services: []string{"http"}},
	}
	if diff := cmp.Diff(want, list(admin)); diff != "" {
		t.Errorf("nodes of an admin (-want +got):\n%s", diff)
	}
	wantError(t, s.do(s.client(nil), "GET", api.PathNodes, nil), 401, api.CodeUnauthenticated, "not logged in")
}
