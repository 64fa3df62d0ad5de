package login_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// start is the clock's start: a whole second, 15 s into a TOTP step, so
// that the codes of neighbouring steps are well apart.
var start = time.Unix(1900000005, 0).UTC().Truncate(30 * time.Second).Add(15 * time.Second)

const (
	cluster  = "prod"
	password = "correct horse battery staple"
)

var src = netip.MustParseAddr("192.0.2.7")

// env is a login service on a real SQLite store, a real CA and real
// argon2id, all on one fake clock.
type env struct {
	t      testing.TB
	clock  *fakeClock
	store  *sqlitestore.Store
	ca     *certs.Authority
	sealer seal.Sealer
	hasher *auth.Hasher
	svc    *login.Service
}

// testHasher is shared: every test hashes with the real default argon2id
// parameters, and one Hasher bounds how many run at once.
var testHasher = sync.OnceValues(func() (*auth.Hasher, error) {
	return auth.NewHasher(auth.DefaultParams, 0)
})

func newEnv(t testing.TB) *env {
	t.Helper()
	clock := &fakeClock{t: start}
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatalf("sqlitestore.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := certs.Generate(certs.Config{Cluster: cluster, Clock: clock.Now})
	if err != nil {
		t.Fatalf("certs.Generate: %v", err)
	}
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.NewAESGCM(key, nil)
	if err != nil {
		t.Fatalf("seal.NewAESGCM: %v", err)
	}
	hasher, err := testHasher()
	if err != nil {
		t.Fatalf("auth.NewHasher: %v", err)
	}
	e := &env{t: t, clock: clock, store: st, ca: ca, sealer: sealer, hasher: hasher}
	e.svc = &login.Service{Store: st, CA: ca, Sealer: sealer, Hasher: hasher, Clock: clock.Now}
	return e
}

func (e *env) addRole(name string, logins []string, maxTTL time.Duration, admin bool) {
	e.t.Helper()
	r := store.Role{Name: name, Logins: logins, MaxTTL: maxTTL, Admin: admin, CreatedAt: e.clock.Now()}
	ev := audit.Event{Time: e.clock.Now(), Type: audit.RoleCreated, Actor: "system", Subject: name, Outcome: audit.Success}
	if err := e.store.CreateRole(context.Background(), r, ev); err != nil {
		e.t.Fatalf("CreateRole(%s): %v", name, err)
	}
}

// addUser creates a user and returns its TOTP secret.
func (e *env) addUser(name string, roles ...string) string {
	e.t.Helper()
	u, enr, err := login.NewUser(context.Background(), e.hasher, e.sealer, "tunnel", name, password, roles, e.clock.Now())
	if err != nil {
		e.t.Fatalf("NewUser(%s): %v", name, err)
	}
	ev := audit.Event{Time: e.clock.Now(), Type: audit.UserCreated, Actor: "system", Subject: u.Name, Outcome: audit.Success}
	if err := e.store.CreateUser(context.Background(), u, ev); err != nil {
		e.t.Fatalf("CreateUser(%s): %v", name, err)
	}
	return enr.Secret
}

// code returns the TOTP code of the step offset steps away from now.
func (e *env) code(secret string, offset int) string {
	e.t.Helper()
	c, err := totp.GenerateCode(secret, e.clock.Now().Add(time.Duration(offset)*auth.Period*time.Second))
	if err != nil {
		e.t.Fatalf("totp.GenerateCode: %v", err)
	}
	return c
}

// clientKey is a client's key pair as the tunnel client sends it.
type clientKey struct {
	pub    ed25519.PublicKey
	csr    string
	sshPub string
}

func newClientKey(t testing.TB) clientKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, priv)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return clientKey{
		pub:    pub,
		csr:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		sshPub: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))),
	}
}

func (e *env) request(user, pw, otp string) api.LoginRequest {
	e.t.Helper()
	k := newClientKey(e.t)
	return api.LoginRequest{User: user, Password: pw, OTP: otp, CSR: k.csr, SSHPublicKey: k.sshPub}
}

func (e *env) login(req api.LoginRequest) (*api.LoginResponse, error) {
	return e.svc.Login(context.Background(), req, src)
}

// lastSeq returns the Seq of the last audit event.
func (e *env) lastSeq() int64 {
	e.t.Helper()
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		e.t.Fatalf("ListAudit: %v", err)
	}
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// shortEvent is what the tests compare of an audit event.
type shortEvent struct {
	Type    audit.Type
	Actor   string
	Subject string
	Outcome audit.Outcome
	Reason  string
}

// eventsAfter returns the events appended after seq, shortened. A
// cert.issued event's Subject (a random serial) is replaced by its kind.
func (e *env) eventsAfter(seq int64) []shortEvent {
	e.t.Helper()
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{AfterSeq: seq})
	if err != nil {
		e.t.Fatalf("ListAudit: %v", err)
	}
	var out []shortEvent
	for _, ev := range evs {
		s := shortEvent{Type: ev.Type, Actor: ev.Actor, Subject: ev.Subject, Outcome: ev.Outcome, Reason: ev.Reason}
		if ev.Type == audit.CertIssued {
			s.Subject = ev.Details["kind"]
		}
		out = append(out, s)
	}
	return out
}

// verifyAudit checks the whole audit chain against the recorded head.
func (e *env) verifyAudit() {
	e.t.Helper()
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		e.t.Fatalf("ListAudit: %v", err)
	}
	head, err := e.store.AuditHead(context.Background())
	if err != nil {
		e.t.Fatalf("AuditHead: %v", err)
	}
	if err := audit.Verify(evs, head); err != nil {
		e.t.Fatalf("audit.Verify over %d events: %v", len(evs), err)
	}
}

func failure(name, reason string) shortEvent {
	return shortEvent{Type: audit.LoginFailure, Actor: name, Subject: name, Outcome: audit.Failure, Reason: reason}
}

func successEvents(name string, ssh bool) []shortEvent {
	out := []shortEvent{{Type: audit.CertIssued, Actor: name, Subject: string(store.CertX509), Outcome: audit.Success}}
	if ssh {
		out = append(out, shortEvent{Type: audit.CertIssued, Actor: name, Subject: string(store.CertSSHUser), Outcome: audit.Success})
	}
	return append(out, shortEvent{Type: audit.LoginSuccess, Actor: name, Subject: name, Outcome: audit.Success})
}

// loginError returns err as a *login.Error, failing t if it is not one.
func loginError(t *testing.T, err error) *login.Error {
	t.Helper()
	var le *login.Error
	if !errors.As(err, &le) {
		t.Fatalf("got error %v (%T); want a *login.Error", err, err)
	}
	return le
}

func wantCode(t *testing.T, resp *api.LoginResponse, err error, status int, code string) *login.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got a login; want an error with code %s", code)
	}
	if resp != nil {
		t.Errorf("got a response with error %v; want none", err)
	}
	le := loginError(t, err)
	if le.Status != status || le.Code != code {
		t.Fatalf("got status %d code %s (%q); want status %d code %s", le.Status, le.Code, le.Message, status, code)
	}
	return le
}

func wantInvalidCredentials(t *testing.T, resp *api.LoginResponse, err error) {
	t.Helper()
	le := wantCode(t, resp, err, 401, api.CodeInvalidCredentials)
	if le.Message != login.ErrInvalidCredentials.Message || le.RetryAfter != 0 {
		t.Errorf("got message %q retry %v; want exactly %q", le.Message, le.RetryAfter, login.ErrInvalidCredentials.Message)
	}
}

func failureCount(t *testing.T, e *env, name string) int {
	t.Helper()
	f, err := e.store.LoginFailures(context.Background(), name)
	if err != nil {
		t.Fatalf("LoginFailures: %v", err)
	}
	return f.Count
}

func TestLoginSuccess(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu", "deploy"}, 2*time.Hour, false)
	e.addRole("ops", []string{"deploy", "root"}, 0, false)
	secret := e.addUser("alice", "dev", "ops")
	k := newClientKey(t)
	now := e.clock.Now()
	seq := e.lastSeq()

	resp, err := e.login(api.LoginRequest{User: " Alice ", Password: password, OTP: e.code(secret, 0), CSR: k.csr, SSHPublicKey: k.sshPub})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if resp.User != "alice" || resp.Warning != "" {
		t.Errorf("got user %q warning %q; want alice and no warning", resp.User, resp.Warning)
	}
	if diff := cmp.Diff([]string{"dev", "ops"}, resp.Roles); diff != "" {
		t.Errorf("roles (-want +got):\n%s", diff)
	}
	wantLogins := []string{"deploy", "root", "ubuntu"}
	if diff := cmp.Diff(wantLogins, resp.Logins); diff != "" {
		t.Errorf("logins (-want +got):\n%s", diff)
	}
	if resp.CA.Pin != e.ca.Pin() || resp.CA.Cluster != cluster {
		t.Errorf("got CA bundle pin %q cluster %q; want %q %q", resp.CA.Pin, resp.CA.Cluster, e.ca.Pin(), cluster)
	}

	// The X.509 certificate.
	block, _ := pem.Decode([]byte(resp.X509Certificate))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("X509Certificate is not a PEM certificate: %q", resp.X509Certificate)
	}
	xc, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	if len(xc.URIs) != 1 || xc.URIs[0].String() != "tunnel://prod/user/alice" {
		t.Errorf("got URI SANs %v; want [tunnel://prod/user/alice]", xc.URIs)
	}
	if !k.pub.Equal(xc.PublicKey) {
		t.Errorf("certificate key is not the client's key")
	}
	if want := now.Add(time.Hour); !xc.NotAfter.Equal(want) || !resp.NotAfter.Equal(want) {
		t.Errorf("got NotAfter %v (response %v); want %v", xc.NotAfter, resp.NotAfter, want)
	}
	if _, err := xc.Verify(x509.VerifyOptions{Roots: e.ca.X509Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not verify as a client certificate of the CA: %v", err)
	}

	// The SSH certificate.
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.SSHCertificate))
	if err != nil {
		t.Fatalf("parse SSH certificate %q: %v", resp.SSHCertificate, err)
	}
	sc, ok := pk.(*ssh.Certificate)
	if !ok {
		t.Fatalf("got SSH %T; want a certificate", pk)
	}
	if diff := cmp.Diff(wantLogins, sc.ValidPrincipals); diff != "" {
		t.Errorf("SSH principals (-want +got):\n%s", diff)
	}
	if got, want := sc.ValidBefore, uint64(now.Add(time.Hour).Unix()); got != want {
		t.Errorf("got ValidBefore %d; want %d (now+1h)", got, want)
	}
	if got, want := string(sc.Key.Marshal()), string(mustSSHKey(t, k.sshPub).Marshal()); got != want {
		t.Errorf("SSH certificate key is not the client's key")
	}
	if got, want := string(sc.SignatureKey.Marshal()), string(e.ca.SSHUserCA().Marshal()); got != want {
		t.Errorf("SSH certificate is not signed by the user CA")
	}
	if sc.CertType != ssh.UserCert {
		t.Errorf("got cert type %d; want user", sc.CertType)
	}

	// Both are recorded, with their events, and the counter is clear.
	for _, c := range []struct {
		kind   store.CertKind
		serial string
	}{{store.CertX509, certs.X509SerialHex(xc)}, {store.CertSSHUser, certs.SSHSerialHex(sc)}} {
		rec, err := e.store.GetCertificate(context.Background(), c.kind, c.serial)
		if err != nil {
			t.Errorf("GetCertificate(%s, %s): %v", c.kind, c.serial, err)
			continue
		}
		if rec.Subject != "alice" {
			t.Errorf("record of %s: got subject %q; want alice", c.kind, rec.Subject)
		}
	}
	if diff := cmp.Diff(successEvents("alice", true), e.eventsAfter(seq)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
	e.verifyAudit()
}

func mustSSHKey(t *testing.T, line string) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sshCert(t *testing.T, line string) *ssh.Certificate {
	t.Helper()
	c, ok := mustSSHKey(t, line).(*ssh.Certificate)
	if !ok {
		t.Fatalf("%q is not an SSH certificate", line)
	}
	return c
}

func TestLoginTTL(t *testing.T) {
	tests := []struct {
		name     string
		roleMax  time.Duration
		ttl      time.Duration
		wantTTL  time.Duration // 0: refused
		wantCode string
	}{
		{name: "default", roleMax: 2 * time.Hour, wantTTL: time.Hour},
		{name: "default capped by a short role", roleMax: 30 * time.Minute, wantTTL: 30 * time.Minute},
		{name: "explicit", roleMax: 2 * time.Hour, ttl: 90 * time.Minute, wantTTL: 90 * time.Minute},
		{name: "exactly the role max", roleMax: 2 * time.Hour, ttl: 2 * time.Hour, wantTTL: 2 * time.Hour},
		{name: "role without max gets the cluster max", ttl: 12 * time.Hour, wantTTL: 12 * time.Hour},
		{name: "above the role max", roleMax: 2 * time.Hour, ttl: 3 * time.Hour, wantCode: api.CodeTTLTooLong},
		{name: "above the cluster max", ttl: 13 * time.Hour, wantCode: api.CodeTTLTooLong},
		{name: "negative", roleMax: 2 * time.Hour, ttl: -time.Hour, wantCode: api.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.addRole("dev", []string{"ubuntu"}, tc.roleMax, false)
			secret := e.addUser("alice", "dev")
			now := e.clock.Now()
			code := e.code(secret, 0)
			req := e.request("alice", password, code)
			req.TTL = api.Duration(tc.ttl)
			seq := e.lastSeq()
			resp, err := e.login(req)
			if tc.wantCode != "" {
				le := wantCode(t, resp, err, 400, tc.wantCode)
				if tc.wantCode == api.CodeTTLTooLong && !strings.Contains(le.Message, "exceeds") {
					t.Errorf("got message %q; want one saying the TTL exceeds the maximum", le.Message)
				}
				// A malformed request is refused before the attempt is
				// reserved. A TTL above the maximum is refused after: the
				// reservation stays, since only a login releases it, so
				// that nothing short of a login resets the counter.
				want := 0
				if tc.wantCode == api.CodeTTLTooLong {
					want = 1
				}
				if n := failureCount(t, e, "alice"); n != want {
					t.Errorf("got %d failures counted; want %d", n, want)
				}
				if tc.wantCode == api.CodeTTLTooLong {
					got := e.eventsAfter(seq)
					if len(got) != 1 || got[0].Type != audit.LoginFailure || got[0].Actor != "alice" || !strings.Contains(got[0].Reason, "exceeds") {
						t.Errorf("got events %+v; want one login.failure by alice saying the TTL exceeds the maximum", got)
					}
				}
				// The code was not consumed: it works for a TTL within bounds.
				req := e.request("alice", password, code)
				if _, err := e.login(req); err != nil {
					t.Errorf("login again with the same code and no TTL: %v; want success (the refused attempt must not consume the code)", err)
				}
				e.verifyAudit()
				return
			}
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if want := now.Add(tc.wantTTL); !resp.NotAfter.Equal(want) {
				t.Errorf("got NotAfter %v; want %v", resp.NotAfter, want)
			}
			if got, want := sshCert(t, resp.SSHCertificate).ValidBefore, uint64(now.Add(tc.wantTTL).Unix()); got != want {
				t.Errorf("got SSH ValidBefore %d; want %d", got, want)
			}
			if diff := cmp.Diff(successEvents("alice", true), e.eventsAfter(seq)); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoginWithoutLogins(t *testing.T) {
	e := newEnv(t)
	e.addRole("viewer", nil, 0, false)
	for _, tc := range []struct {
		name  string
		roles []string
	}{
		{"role without logins", []string{"viewer"}},
		{"no role", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			secret := e.addUser(name, tc.roles...)
			seq := e.lastSeq()
			resp, err := e.login(e.request(name, password, e.code(secret, 0)))
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if resp.SSHCertificate != "" {
				t.Errorf("got SSH certificate %q; want none", resp.SSHCertificate)
			}
			if resp.Warning == "" {
				t.Errorf("got no warning; want one saying no SSH certificate was issued")
			}
			if resp.X509Certificate == "" {
				t.Errorf("got no X.509 certificate; want one")
			}
			if want := e.clock.Now().Add(time.Hour); !resp.NotAfter.Equal(want) {
				t.Errorf("got NotAfter %v; want %v", resp.NotAfter, want)
			}
			if diff := cmp.Diff(successEvents(name, false), e.eventsAfter(seq)); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoginTOTPWindow(t *testing.T) {
	tests := []struct {
		offset int
		ok     bool
	}{
		{-3, false}, {-2, false}, {-1, true}, {0, true}, {1, true}, {2, false}, {3, false},
	}
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	for _, tc := range tests {
		t.Run(fmt.Sprintf("step%+d", tc.offset), func(t *testing.T) {
			name := fmt.Sprintf("user%d", tc.offset+10)
			secret := e.addUser(name, "dev")
			seq := e.lastSeq()
			resp, err := e.login(e.request(name, password, e.code(secret, tc.offset)))
			if tc.ok {
				if err != nil {
					t.Fatalf("got %v; want success", err)
				}
				if resp == nil || resp.X509Certificate == "" {
					t.Fatalf("got no certificate; want one")
				}
				return
			}
			wantInvalidCredentials(t, resp, err)
			if diff := cmp.Diff([]shortEvent{failure(name, "wrong code")}, e.eventsAfter(seq)); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
		})
	}
	e.verifyAudit()
}

func TestLoginReplay(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	code := e.code(secret, 0)
	if _, err := e.login(e.request("alice", password, code)); err != nil {
		t.Fatalf("first login: %v", err)
	}
	variants := []string{
		code,
		code[:3] + " " + code[3:],
		" " + code[:3] + " " + code[3:],
		code[:3] + "-" + code[3:],
		"\t" + code + "\n",
	}
	for i, v := range variants {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			seq := e.lastSeq()
			resp, err := e.login(e.request("alice", password, v))
			le := wantCode(t, resp, err, 401, api.CodeReplayedCode)
			if !strings.Contains(le.Message, "already used") {
				t.Errorf("got message %q; want it to say the code was already used", le.Message)
			}
			want := []shortEvent{failure("alice", "replayed code")}
			if i+1 == 5 {
				// A replay counts as a failed login: the fifth locks the name out.
				want = append(want, shortEvent{Type: audit.LoginLockoutBegin, Actor: "system", Subject: "alice",
					Outcome: audit.Success, Reason: "5 consecutive failed logins"})
			}
			if diff := cmp.Diff(want, e.eventsAfter(seq)); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
		})
	}
	e.verifyAudit()
}

func TestLoginOlderStepAfterNewer(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	older, newer := e.code(secret, 0), e.code(secret, 1)
	if older == newer {
		t.Skip("two steps share a code; nothing to test")
	}
	if _, err := e.login(e.request("alice", password, newer)); err != nil {
		t.Fatalf("login with the next step's code: %v", err)
	}
	resp, err := e.login(e.request("alice", password, older))
	wantCode(t, resp, err, 401, api.CodeReplayedCode)

	// Once the clock reaches the step after the newer one, its code works.
	e.clock.Advance(2 * auth.Period * time.Second)
	if _, err := e.login(e.request("alice", password, e.code(secret, 0))); err != nil {
		t.Errorf("login with a later step: %v", err)
	}
}

func TestLoginConcurrentSameCode(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	code := e.code(secret, 0)
	const n = 4
	reqs := make([]api.LoginRequest, n)
	for i := range reqs {
		reqs[i] = e.request("alice", password, code)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = e.login(reqs[i]) })
	}
	wg.Wait()
	var ok, replayed int
	for _, err := range errs {
		var le *login.Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &le) && le.Code == api.CodeReplayedCode:
			replayed++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || replayed != n-1 {
		t.Errorf("got %d logins and %d replays; want 1 and %d", ok, replayed, n-1)
	}
	e.verifyAudit()
}

func TestLoginInvalidCredentials(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	tests := []struct {
		name     string
		user     string
		password string
		code     func() string
		want     []shortEvent
		counted  string // name whose counter goes up; "" for none
	}{
		{
			name: "unknown user", user: "mallory", password: password,
			code:    func() string { return e.code(secret, 0) },
			want:    []shortEvent{failure("mallory", "unknown user")},
			counted: "mallory",
		},
		{
			name: "wrong password", user: "alice", password: password + "!",
			code:    func() string { return e.code(secret, 0) },
			want:    []shortEvent{failure("alice", "wrong password")},
			counted: "alice",
		},
		{
			name: "empty password", user: "alice", password: "",
			code:    func() string { return e.code(secret, 0) },
			want:    []shortEvent{failure("alice", "wrong password")},
			counted: "alice",
		},
		{
			name: "wrong code", user: "alice", password: password,
			code:    func() string { return wrongCode(e, secret) },
			want:    []shortEvent{failure("alice", "wrong code")},
			counted: "alice",
		},
		{
			name: "malformed code", user: "alice", password: password,
			code:    func() string { return "12345x" },
			want:    []shortEvent{failure("alice", "malformed code")},
			counted: "alice",
		},
		{
			name: "malformed user name", user: "al ice;drop", password: password,
			code: func() string { return e.code(secret, 0) },
			want: []shortEvent{{Type: audit.LoginFailure, Actor: "anonymous", Outcome: audit.Failure, Reason: "malformed user name"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := 0
			if tc.counted != "" {
				before = failureCount(t, e, tc.counted)
			}
			seq := e.lastSeq()
			resp, err := e.login(e.request(tc.user, tc.password, tc.code()))
			wantInvalidCredentials(t, resp, err)
			if diff := cmp.Diff(tc.want, e.eventsAfter(seq)); diff != "" {
				t.Errorf("audit events (-want +got):\n%s", diff)
			}
			if tc.counted != "" {
				if got := failureCount(t, e, tc.counted); got != before+1 {
					t.Errorf("got %d failures for %s; want %d", got, tc.counted, before+1)
				}
			}
		})
	}
	// A failure costs the code nothing: alice logs in with the current code.
	if _, err := e.login(e.request("alice", password, e.code(secret, 0))); err != nil {
		t.Errorf("login after failures: %v", err)
	}
	if n := failureCount(t, e, "alice"); n != 0 {
		t.Errorf("got %d failures after a successful login; want 0", n)
	}
	e.verifyAudit()
}

// wrongCode returns a six-digit code that matches none of the accepted
// steps.
func wrongCode(e *env, secret string) string {
	valid := map[string]bool{}
	for off := -1; off <= 1; off++ {
		valid[e.code(secret, off)] = true
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", (123456+i*7919)%1000000)
		if !valid[c] {
			return c
		}
	}
}

func TestLoginLockout(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")

	// Five failures under every spelling of the name lock "alice" out.
	spellings := []string{"Alice", " alice ", "ALICE", "alice", "aLiCe"}
	for i, name := range spellings {
		resp, err := e.login(e.request(name, "wrong password!", e.code(secret, 0)))
		wantInvalidCredentials(t, resp, err)
		if got := failureCount(t, e, "alice"); got != i+1 {
			t.Fatalf("after failure %d as %q: got count %d; want %d", i+1, name, got, i+1)
		}
	}

	// Now even the right credentials are refused, with the time to wait.
	e.clock.Advance(time.Minute)
	code := e.code(secret, 0)
	seq := e.lastSeq()
	resp, err := e.login(e.request("alice", password, code))
	le := wantCode(t, resp, err, 429, api.CodeLockedOut)
	if le.RetryAfter != 14*time.Minute {
		t.Errorf("got RetryAfter %v; want 14m0s", le.RetryAfter)
	}
	if diff := cmp.Diff([]shortEvent{failure("alice", "locked out after repeated failures")}, e.eventsAfter(seq)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}

	// Less than a second before the end, the caller is still told to wait
	// a whole second, never "0s".
	e.clock.Advance(14*time.Minute - 400*time.Millisecond)
	resp, err = e.login(e.request("alice", password, e.code(secret, 0)))
	le = wantCode(t, resp, err, 429, api.CodeLockedOut)
	if le.RetryAfter != time.Second {
		t.Errorf("got RetryAfter %v (%q); want 1s", le.RetryAfter, le.Message)
	}

	// At the end of the lockout the same code (never accepted) works.
	e.clock.Advance(400 * time.Millisecond)
	if _, err := e.login(e.request("alice", password, e.code(secret, 0))); err != nil {
		t.Fatalf("login after the lockout ended: %v", err)
	}
	if n := failureCount(t, e, "alice"); n != 0 {
		t.Errorf("got %d failures after a successful login; want 0", n)
	}
	e.verifyAudit()
}

// TestLoginLockoutUnknownUser checks that an unknown name locks out exactly
// as a real one does, so lockouts do not tell which users exist.
func TestLoginLockoutUnknownUser(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")

	var got [2][]string
	for i, name := range []string{"alice", "ghost"} {
		for range 5 {
			resp, err := e.login(e.request(name, "wrong password!", e.code(secret, 0)))
			wantInvalidCredentials(t, resp, err)
			got[i] = append(got[i], "401 "+err.Error())
		}
		resp, err := e.login(e.request(name, password, e.code(secret, 0)))
		le := wantCode(t, resp, err, 429, api.CodeLockedOut)
		got[i] = append(got[i], fmt.Sprintf("%d %s %v %s", le.Status, le.Code, le.RetryAfter, strings.ReplaceAll(le.Message, name, "NAME")))
	}
	if diff := cmp.Diff(got[0], got[1]); diff != "" {
		t.Errorf("answers for a known (-) and an unknown (+) user differ:\n%s", diff)
	}
	e.verifyAudit()
}

func TestLoginAdminLocked(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	ev := audit.Event{Time: e.clock.Now(), Type: audit.UserLocked, Actor: "admin", Subject: "alice", Outcome: audit.Success}
	if err := e.store.SetUserLocked(context.Background(), "alice", true, ev); err != nil {
		t.Fatal(err)
	}

	// Without the right credentials: nothing said about the lock.
	resp, err := e.login(e.request("alice", "wrong password!", e.code(secret, 0)))
	wantInvalidCredentials(t, resp, err)

	seq := e.lastSeq()
	resp, err = e.login(e.request("alice", password, e.code(secret, 0)))
	le := wantCode(t, resp, err, 403, api.CodeForbidden)
	if !strings.Contains(le.Message, "locked") {
		t.Errorf("got message %q; want it to say the account is locked", le.Message)
	}
	if diff := cmp.Diff([]shortEvent{failure("alice", "user locked by an administrator")}, e.eventsAfter(seq)); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
	e.verifyAudit()
}

func TestLoginBadRequest(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaSSH, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384CSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	if err != nil {
		t.Fatal(err)
	}
	pemCSR := func(der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	k1, k2 := newClientKey(t), newClientKey(t)
	// A CSR whose signature does not verify: flip a byte of the signature.
	badSig := []byte(nil)
	{
		b, _ := pem.Decode([]byte(k1.csr))
		badSig = slices.Clone(b.Bytes)
		badSig[len(badSig)-1] ^= 0xff
	}

	tests := []struct {
		name   string
		csr    string
		sshPub string
	}{
		{"empty CSR", "", k1.sshPub},
		{"garbage CSR", "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n", k1.sshPub},
		{"CSR signature does not verify", pemCSR(badSig), k1.sshPub},
		{"empty SSH key", k1.csr, ""},
		{"garbage SSH key", k1.csr, "ssh-ed25519 AAAAnotakey"},
		{"mismatched SSH key", k1.csr, k2.sshPub},
		{"RSA CSR", pemCSR(rsaCSR), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaSSH)))},
		{"RSA SSH key", k1.csr, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaSSH)))},
		{"P-384 CSR", pemCSR(p384CSR), k1.sshPub},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := api.LoginRequest{User: "alice", Password: password, OTP: e.code(secret, 0), CSR: tc.csr, SSHPublicKey: tc.sshPub}
			seq := e.lastSeq()
			resp, err := e.login(req)
			wantCode(t, resp, err, 400, api.CodeBadRequest)
			if n := failureCount(t, e, "alice"); n != 0 {
				t.Errorf("got %d failures counted; want 0", n)
			}
			// The refusal is audited all the same.
			evs := e.eventsAfter(seq)
			if len(evs) != 1 || evs[0].Type != audit.LoginFailure || !strings.HasPrefix(evs[0].Reason, "malformed request: ") {
				t.Errorf("audit events after a malformed request: %+v; want one login.failure 'malformed request: ...'", evs)
			}
		})
	}
	// None of it consumed the code.
	if _, err := e.login(e.request("alice", password, e.code(secret, 0))); err != nil {
		t.Errorf("login after bad requests: %v", err)
	}
	e.verifyAudit()
}

// TestLoginAuditHasNoSecrets runs every kind of attempt and searches every
// field of every event for the password and the codes.
func TestLoginAuditHasNoSecrets(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, time.Hour, false)
	const secretPassword = "Sup3r-Secret-Passw0rd-XYZZY"
	u, enr, err := login.NewUser(context.Background(), e.hasher, e.sealer, "tunnel", "alice", secretPassword, []string{"dev"}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.CreateUser(context.Background(), u, audit.Event{Time: e.clock.Now(), Type: audit.UserCreated, Actor: "system", Subject: "alice", Outcome: audit.Success}); err != nil {
		t.Fatal(err)
	}
	code := e.code(enr.Secret, 0)
	attempts := []api.LoginRequest{
		e.request("alice", secretPassword+"x", code),  // wrong password
		e.request("ghost", secretPassword, code),      // unknown user
		e.request("alice", secretPassword, "000000"),  // (probably) wrong code
		e.request("bad name", secretPassword, code),   // malformed name
		e.request("alice", secretPassword, code),      // success
		e.request("alice", secretPassword, code),      // replay
		e.request("alice", secretPassword, "12 34 5"), // malformed code
	}
	tooLong := e.request("alice", secretPassword, e.code(enr.Secret, 1))
	tooLong.TTL = api.Duration(2 * time.Hour)
	attempts = append(attempts, tooLong)
	for _, req := range attempts {
		_, _ = e.login(req)
	}
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < len(attempts) {
		t.Fatalf("got %d events for %d attempts; want at least one each", len(evs), len(attempts))
	}
	forbidden := []string{secretPassword, "Secret-Passw0rd", enr.Secret}
	for _, ev := range evs {
		for _, field := range allStrings(reflect.ValueOf(ev)) {
			for _, f := range forbidden {
				if strings.Contains(field, f) {
					t.Errorf("event %d (%s) holds a secret %q in %q", ev.Seq, ev.Type, f, field)
				}
			}
		}
	}
	e.verifyAudit()
}

// allStrings returns every string reachable from v: fields, map keys and
// values, slice elements, and the text of times.
func allStrings(v reflect.Value) []string {
	switch v.Kind() {
	case reflect.String:
		return []string{v.String()}
	case reflect.Struct:
		if t, ok := v.Interface().(time.Time); ok {
			return []string{t.String()}
		}
		var out []string
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				out = append(out, allStrings(v.Field(i))...)
			}
		}
		return out
	case reflect.Map:
		var out []string
		for _, k := range v.MapKeys() {
			out = append(out, allStrings(k)...)
			out = append(out, allStrings(v.MapIndex(k))...)
		}
		sort.Strings(out)
		return out
	case reflect.Slice, reflect.Array:
		var out []string
		for i := range v.Len() {
			out = append(out, allStrings(v.Index(i))...)
		}
		return out
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return allStrings(v.Elem())
	}
	return []string{fmt.Sprint(v.Interface())}
}

// failingStore is a store whose chosen writes fail.
type failingStore struct {
	store.Store
	failRecordCerts bool
	failAppend      bool
}

var errInjected = errors.New("injected store failure")

func (s *failingStore) RecordCertificates(ctx context.Context, c []store.IssuedCert, evs []audit.Event) error {
	if s.failRecordCerts {
		return errInjected
	}
	return s.Store.RecordCertificates(ctx, c, evs)
}

func (s *failingStore) AppendAudit(ctx context.Context, ev audit.Event) (audit.Event, error) {
	if s.failAppend {
		return audit.Event{}, errInjected
	}
	return s.Store.AppendAudit(ctx, ev)
}

func (s *failingStore) AppendAudits(ctx context.Context, evs []audit.Event) ([]audit.Event, error) {
	if s.failAppend {
		return nil, errInjected
	}
	return s.Store.AppendAudits(ctx, evs)
}

func TestLoginNoCertificateWithoutRecord(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *env) // changes e.svc before the login
		ttl   time.Duration
	}{
		{name: "store closed", setup: func(e *env) { e.store.Close() }},
		{name: "certificates and events not recorded", setup: func(e *env) {
			e.svc.Store = &failingStore{Store: e.store, failRecordCerts: true}
		}},
		{name: "refusal not recorded", ttl: 24 * time.Hour, setup: func(e *env) {
			e.svc.Store = &failingStore{Store: e.store, failAppend: true}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.addRole("dev", []string{"ubuntu"}, 0, false)
			secret := e.addUser("alice", "dev")
			tc.setup(e)
			req := e.request("alice", password, e.code(secret, 0))
			req.TTL = api.Duration(tc.ttl)
			resp, err := e.login(req)
			le := wantCode(t, resp, err, 500, api.CodeInternal)
			if strings.Contains(le.Message, errInjected.Error()) || strings.Contains(le.Message, "sql") {
				t.Errorf("message %q shows internal detail", le.Message)
			}
		})
	}
}

// BenchmarkLogin measures the whole login: argon2id, TOTP, two
// certificates and the SQLite transactions. Each iteration logs in a user
// of its own, created outside the timer, so no code is a replay.
func BenchmarkLogin(b *testing.B) {
	e := newEnv(b)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		name := fmt.Sprintf("user%d", i)
		secret := e.addUser(name, "dev")
		req := e.request(name, password, e.code(secret, 0))
		b.StartTimer()
		t0 := time.Now()
		if _, err := e.login(req); err != nil {
			b.Fatalf("Login: %v", err)
		}
		durations = append(durations, time.Since(t0))
	}
	b.StopTimer()
	if len(durations) == 0 {
		return
	}
	slices.Sort(durations)
	pct := func(p float64) float64 {
		i := int(p * float64(len(durations)-1))
		return float64(durations[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// evalGate is an auth.Hasher OnCompute hook that counts the passwords a
// burst of n logins has evaluated and holds every evaluation until each of
// the n logins has either reached one or been answered without one. So
// every attempt has passed the lockout before any is decided, whatever the
// scheduling: the worst case for a counter read before the check and
// written after it, and the case a reservation must hold in.
type evalGate struct {
	t       *testing.T
	n       int
	mu      sync.Mutex
	arrived int // evaluations started
	skipped int // logins answered without an evaluation
	release chan struct{}
	opened  bool
	at      int           // see arrivedAt
	atCh    chan struct{} // closed when arrived reaches at
}

func newEvalGate(t *testing.T, n int) *evalGate {
	return &evalGate{t: t, n: n, release: make(chan struct{})}
}

func (g *evalGate) openIfAllIn() {
	if !g.opened && g.arrived+g.skipped >= g.n {
		g.opened = true
		close(g.release)
	}
}

// arrivedAt returns a channel closed once k evaluations have started.
// Call it before the burst.
func (g *evalGate) arrivedAt(k int) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.at, g.atCh = k, make(chan struct{})
	return g.atCh
}

// onCompute is the hook.
func (g *evalGate) onCompute() {
	g.mu.Lock()
	g.arrived++
	if g.atCh != nil && g.arrived == g.at {
		close(g.atCh)
	}
	g.openIfAllIn()
	g.mu.Unlock()
	select {
	case <-g.release:
	case <-time.After(5 * time.Minute):
		g.t.Errorf("the burst of %d logins never all reached a password check or an answer", g.n)
	}
}

// answered records a login that returned; evaluated says whether it got
// past the lockout (and so went through onCompute).
func (g *evalGate) answered(evaluated bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !evaluated {
		g.skipped++
	}
	g.openIfAllIn()
}

func (g *evalGate) evaluations() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.arrived
}

// countingHasher returns a Hasher with the real parameters whose
// computations go through hook.
func countingHasher(t *testing.T, hook func()) *auth.Hasher {
	t.Helper()
	h, err := auth.NewHasher(auth.DefaultParams, 0)
	if err != nil {
		t.Fatalf("auth.NewHasher: %v", err)
	}
	h.OnCompute = hook
	return h
}

// burst sends every request at once from its own goroutine, through the
// gate, and returns the answers in request order.
func (e *env) burst(g *evalGate, reqs []api.LoginRequest) ([]*api.LoginResponse, []error) {
	return e.burstDelayed(g, reqs, nil)
}

// burstDelayed is burst, but the request i waits for delayed[i] to close
// when there is one.
func (e *env) burstDelayed(g *evalGate, reqs []api.LoginRequest, delayed map[int]<-chan struct{}) ([]*api.LoginResponse, []error) {
	resps := make([]*api.LoginResponse, len(reqs))
	errs := make([]error, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() {
			<-start
			if d, ok := delayed[i]; ok {
				<-d
			}
			resps[i], errs[i] = e.login(reqs[i])
			var le *login.Error
			g.answered(!(errors.As(errs[i], &le) && le.Code == api.CodeLockedOut))
		})
	}
	close(start)
	wg.Wait()
	return resps, errs
}

// tally counts the answers of a burst by kind.
type tally struct{ ok, invalid, lockedOut, other int }

func tallyAnswers(t *testing.T, resps []*api.LoginResponse, errs []error) tally {
	t.Helper()
	var n tally
	for i, err := range errs {
		var le *login.Error
		switch {
		case err == nil && resps[i] != nil:
			n.ok++
		case errors.As(err, &le) && le.Code == api.CodeInvalidCredentials:
			n.invalid++
		case errors.As(err, &le) && le.Code == api.CodeLockedOut && le.Status == 429 && strings.Contains(le.Message, "too many failed logins"):
			n.lockedOut++
		default:
			n.other++
			t.Errorf("request %d: unexpected answer %v", i, err)
		}
	}
	return n
}

// reasons counts the login.failure events after seq by reason, and the
// lockouts begun.
func (e *env) reasons(seq int64) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for _, ev := range e.eventsAfter(seq) {
		switch ev.Type {
		case audit.LoginFailure:
			out[ev.Reason]++
		case audit.LoginLockoutBegin, audit.LoginSuccess:
			out[string(ev.Type)]++
		}
	}
	return out
}

// TestLoginLockoutConcurrentPasswords sends 100 wrong passwords at once:
// only the first MaxFailures may be evaluated, the rest are told the name
// is locked out without their password being looked at.
func TestLoginLockoutConcurrentPasswords(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	const n = 100
	g := newEvalGate(t, n)
	e.svc.Hasher = countingHasher(t, g.onCompute)

	reqs := make([]api.LoginRequest, n)
	for i := range reqs {
		reqs[i] = e.request("alice", fmt.Sprintf("guess number %d", i), e.code(secret, 0))
	}
	seq := e.lastSeq()
	resps, errs := e.burst(g, reqs)
	got := tallyAnswers(t, resps, errs)

	max := auth.DefaultMaxFailures
	if ev := g.evaluations(); ev != max {
		t.Errorf("%d of %d concurrent wrong passwords were evaluated; want exactly %d", ev, n, max)
	}
	if want := (tally{invalid: max, lockedOut: n - max}); got != want {
		t.Errorf("got answers %+v; want %+v", got, want)
	}
	want := map[string]int{"wrong password": max, "locked out after repeated failures": n - max, string(audit.LoginLockoutBegin): 1}
	if diff := cmp.Diff(want, e.reasons(seq)); diff != "" {
		t.Errorf("audit events by reason (-want +got):\n%s", diff)
	}
	if c := failureCount(t, e, "alice"); c != max {
		t.Errorf("got failure count %d; want %d", c, max)
	}
	e.verifyAudit()
}

// TestLoginLockoutConcurrentCodes is the TOTP brute force: someone who
// knows the password sends 79 wrong codes and the right one at once. At
// most MaxFailures codes may be checked; every other attempt, the right
// code included unless it happened to be among them, is told the name is
// locked out.
func TestLoginLockoutConcurrentCodes(t *testing.T) {
	const n = 80
	const right = n / 2 // neither the first goroutine started nor the last
	max := auth.DefaultMaxFailures
	tests := []struct {
		name string
		// late holds the right code back until MaxFailures guesses are
		// being checked (and none decided yet), so that it must meet the
		// lockout; otherwise it goes with the others and may or may not be
		// among the attempts evaluated.
		late bool
	}{
		{name: "all at once"},
		{name: "right code while the guesses are checked", late: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.addRole("dev", []string{"ubuntu"}, 0, false)
			secret := e.addUser("alice", "dev")
			g := newEvalGate(t, n)
			e.svc.Hasher = countingHasher(t, g.onCompute)

			wrong := wrongCodes(e, secret, n-1)
			reqs := make([]api.LoginRequest, 0, n)
			for i := range n - 1 {
				if i == right {
					reqs = append(reqs, e.request("alice", password, e.code(secret, 0)))
				}
				reqs = append(reqs, e.request("alice", password, wrong[i]))
			}
			var delayed map[int]<-chan struct{}
			if tc.late {
				delayed = map[int]<-chan struct{}{right: g.arrivedAt(max)}
			}
			seq := e.lastSeq()
			resps, errs := e.burstDelayed(g, reqs, delayed)
			got := tallyAnswers(t, resps, errs)

			if ev := g.evaluations(); ev != max {
				t.Errorf("%d of %d concurrent attempts were evaluated; want exactly %d", ev, n, max)
			}
			if got.ok > 1 || got.ok+got.invalid != max || got.lockedOut != n-max {
				t.Errorf("got answers %+v; want %d evaluated (at most one login) and %d locked out", got, max, n-max)
			}
			reasons := e.reasons(seq)
			if reasons["wrong code"] != got.invalid || reasons[string(audit.LoginSuccess)] != got.ok ||
				reasons["locked out after repeated failures"] != n-max {
				t.Errorf("got audit events by reason %v; want %d wrong code, %d logins, %d locked out", reasons, got.invalid, got.ok, n-max)
			}
			if got.ok == 1 && !tc.late {
				// The right code was among the attempts evaluated: that is
				// the owner's one login, which releases the counter.
				if errs[right] != nil {
					t.Errorf("a wrong code logged in")
				}
				t.Logf("the right code was among the %d attempts evaluated", max)
				e.verifyAudit()
				return
			}
			var le *login.Error
			if !errors.As(errs[right], &le) || le.Code != api.CodeLockedOut {
				t.Errorf("the right code got %v; want the lockout, since it was not among the attempts evaluated", errs[right])
			}
			if c := failureCount(t, e, "alice"); c != max {
				t.Errorf("got failure count %d; want %d", c, max)
			}
			e.verifyAudit()
		})
	}
}

// wrongCodes returns n distinct six-digit codes that match none of the
// accepted steps.
func wrongCodes(e *env, secret string, n int) []string {
	valid := map[string]bool{}
	for off := -1; off <= 1; off++ {
		valid[e.code(secret, off)] = true
	}
	var out []string
	for i := 0; len(out) < n; i++ {
		c := fmt.Sprintf("%06d", (100003+i*7919)%1000000)
		if !valid[c] {
			out = append(out, c)
		}
	}
	return out
}

// TestLoginUnknownUserCostsAHash checks that every refusal of a name costs
// one argon2 evaluation, whether the user exists or not: an unknown or
// malformed name is checked against the dummy hash, so that the time an
// answer takes does not tell which users exist.
func TestLoginUnknownUserCostsAHash(t *testing.T) {
	e := newEnv(t)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("alice", "dev")
	var evaluations atomic.Int64
	e.svc.Hasher = countingHasher(t, func() { evaluations.Add(1) })
	for _, name := range []string{"alice", "mallory", "al ice;drop", strings.Repeat("x", 65)} {
		t.Run(name, func(t *testing.T) {
			before := evaluations.Load()
			resp, err := e.login(e.request(name, "wrong password!", e.code(secret, 0)))
			wantInvalidCredentials(t, resp, err)
			if got := evaluations.Load() - before; got != 1 {
				t.Errorf("the refusal of %q cost %d argon2 evaluations; want 1, as for every name", name, got)
			}
		})
	}
}
