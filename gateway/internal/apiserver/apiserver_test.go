package apiserver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/gateway/internal/servercert"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

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

// start is a whole second 15 s into a TOTP step.
var start = time.Unix(1900000005, 0).UTC().Truncate(30 * time.Second).Add(15 * time.Second)

const (
	cluster    = "prod"
	password   = "correct horse battery staple"
	serverName = "localhost"
)

var testHasher = sync.OnceValues(func() (*auth.Hasher, error) {
	return auth.NewHasher(auth.DefaultParams, 0)
})

// testServer is the API on a real TLS listener, with a real store, CA and
// login service on one fake clock.
type testServer struct {
	t      *testing.T
	clock  *fakeClock
	store  *sqlitestore.Store
	ca     *certs.Authority
	sealer seal.Sealer
	hasher *auth.Hasher
	api    *apiserver.Server
	ts     *httptest.Server
}

func newServer(t *testing.T, configure ...func(*apiserver.Server, *fakeClock)) *testServer {
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
		t.Fatal(err)
	}
	hasher, err := testHasher()
	if err != nil {
		t.Fatal(err)
	}
	svc := &login.Service{Store: st, CA: ca, Sealer: sealer, Hasher: hasher, Clock: clock.Now}
	srv := &apiserver.Server{Store: st, CA: ca, Sealer: sealer, Hasher: hasher, Login: svc,
		Version: "test", Clock: clock.Now, TOTPIssuer: "tunnel-test"}
	for _, f := range configure {
		f(srv, clock)
	}
	src, err := servercert.FromCA(ca, "gw", []string{serverName, "127.0.0.1"}, 0, clock.Now)
	if err != nil {
		t.Fatalf("servercert.FromCA: %v", err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.TLS = trust.ServerConfig(src.GetCertificate)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return &testServer{t: t, clock: clock, store: st, ca: ca, sealer: sealer, hasher: hasher, api: srv, ts: ts}
}

// client returns an HTTPS client that trusts the server by the CA pin and
// presents cert (nil for none).
func (s *testServer) client(cert *tls.Certificate) *http.Client {
	cfg := trust.PinnedClientConfig(s.ca.Pin(), serverName, s.clock.Now)
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	s.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// apiError decodes the body as an api.Error.
func (r response) apiError(t *testing.T) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body %q is not an API error: %v", r.body, err)
	}
	return e
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode body %q: %v", r.body, err)
	}
}

// do sends a request; body is sent as is when it is a string or []byte,
// else as JSON.
func (s *testServer) do(c *http.Client, method, path string, body any) response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.ts.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantError checks the status, code and that the message holds every
// fragment.
func wantError(t *testing.T, r response, status int, code string, fragments ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got status %d (%s); want %d", r.status, r.body, status)
	}
	e := r.apiError(t)
	if e.Code != code {
		t.Errorf("got code %q (%q); want %q", e.Code, e.Message, code)
	}
	for _, f := range fragments {
		if !strings.Contains(e.Message, f) {
			t.Errorf("got message %q; want it to contain %q", e.Message, f)
		}
	}
}

func (s *testServer) addRole(name string, logins []string, admin bool) {
	s.t.Helper()
	ev := audit.Event{Time: s.clock.Now(), Type: audit.RoleCreated, Actor: "system", Subject: name, Outcome: audit.Success}
	if err := s.store.CreateRole(context.Background(), store.Role{Name: name, Logins: logins, Admin: admin, CreatedAt: s.clock.Now()}, ev); err != nil {
		s.t.Fatalf("CreateRole: %v", err)
	}
}

// addUser creates a user directly in the store and returns its TOTP secret.
func (s *testServer) addUser(name string, roles ...string) string {
	s.t.Helper()
	u, enr, err := login.NewUser(context.Background(), s.hasher, s.sealer, "tunnel-test", name, password, roles, s.clock.Now())
	if err != nil {
		s.t.Fatalf("NewUser: %v", err)
	}
	ev := audit.Event{Time: s.clock.Now(), Type: audit.UserCreated, Actor: "system", Subject: name, Outcome: audit.Success}
	if err := s.store.CreateUser(context.Background(), u, ev); err != nil {
		s.t.Fatalf("CreateUser: %v", err)
	}
	return enr.Secret
}

// issue signs a client certificate for user name with ca at ca's clock and,
// if record is set, records it in the store as a login would.
func (s *testServer) issue(ca *certs.Authority, name string, ttl time.Duration, record bool) *tls.Certificate {
	s.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	id := identity.ID{Cluster: ca.Cluster(), Kind: identity.User, Name: name}
	c, err := ca.IssueX509Client(certs.X509Request{ID: id, PublicKey: pub, TTL: ttl})
	if err != nil {
		s.t.Fatalf("IssueX509Client: %v", err)
	}
	if record {
		rec := store.IssuedCert{Serial: certs.X509SerialHex(c), Kind: store.CertX509, Subject: name, SubjectKind: identity.User,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: s.clock.Now(), Principals: []string{id.String()}}
		ev := audit.Event{Time: s.clock.Now(), Type: audit.CertIssued, Actor: name, Subject: rec.Serial, Outcome: audit.Success}
		if err := s.store.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{ev}); err != nil {
			s.t.Fatalf("RecordCertificates: %v", err)
		}
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c}
}

func (s *testServer) verifyAudit() {
	s.t.Helper()
	evs, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	head, err := s.store.AuditHead(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	if err := audit.Verify(evs, head); err != nil {
		s.t.Fatalf("audit.Verify over %d events: %v", len(evs), err)
	}
}

func TestAnonymousEndpoints(t *testing.T) {
	s := newServer(t)
	c := s.client(nil)

	r := s.do(c, "GET", api.PathPing, nil)
	if r.status != 200 {
		t.Fatalf("ping: got status %d (%s); want 200", r.status, r.body)
	}
	var ping api.Ping
	r.decode(t, &ping)
	if diff := cmp.Diff(api.Ping{Cluster: cluster, Version: "test"}, ping); diff != "" {
		t.Errorf("ping (-want +got):\n%s", diff)
	}

	r = s.do(c, "GET", api.PathCA, nil)
	if r.status != 200 {
		t.Fatalf("CA: got status %d (%s); want 200", r.status, r.body)
	}
	var bundle api.CA
	r.decode(t, &bundle)
	if bundle.Pin != s.ca.Pin() || bundle.Cluster != cluster {
		t.Errorf("got pin %q cluster %q; want %q %q", bundle.Pin, bundle.Cluster, s.ca.Pin(), cluster)
	}
	block, _ := pem.Decode([]byte(bundle.X509))
	if block == nil {
		t.Fatalf("x509_pem %q holds no PEM block", bundle.X509)
	}
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if trust.Pin(caCert) != bundle.Pin {
		t.Errorf("the CA certificate's pin %s is not the bundle's pin %s", trust.Pin(caCert), bundle.Pin)
	}
	if len(bundle.SSHUserCAs) != 1 || len(bundle.SSHHostCAs) != 1 {
		t.Errorf("got %d SSH user CAs and %d host CAs; want 1 and 1", len(bundle.SSHUserCAs), len(bundle.SSHHostCAs))
	}

	wantError(t, s.do(c, "GET", "/v1/nosuch", nil), 404, api.CodeNotFound, "no such API endpoint")
}

func TestAuthentication(t *testing.T) {
	s := newServer(t)
	s.addRole("dev", []string{"ubuntu", "deploy"}, false)
	s.addUser("alice", "dev")
	s.addUser("carol", "dev")
	s.addUser("dave", "dev")
	other, err := certs.Generate(certs.Config{Cluster: "staging", Clock: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	sameName, err := certs.Generate(certs.Config{Cluster: cluster, Clock: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		cert      func() *tls.Certificate
		status    int
		code      string
		fragments []string
	}{
		{name: "no certificate", cert: func() *tls.Certificate { return nil },
			status: 401, code: api.CodeUnauthenticated, fragments: []string{"not logged in", "tunnel login"}},
		{name: "expired", cert: func() *tls.Certificate {
			s.clock.Advance(-3 * time.Hour)
			defer s.clock.Advance(3 * time.Hour)
			return s.issue(s.ca, "alice", time.Hour, true)
		}, status: 401, code: api.CodeUnauthenticated, fragments: []string{"expired", "2h0m0s ago", "tunnel login"}},
		{name: "not valid yet", cert: func() *tls.Certificate {
			s.clock.Advance(time.Hour)
			defer s.clock.Advance(-time.Hour)
			return s.issue(s.ca, "alice", time.Hour, true)
		}, status: 401, code: api.CodeUnauthenticated, fragments: []string{"not valid yet"}},
		{name: "another cluster's CA", cert: func() *tls.Certificate { return s.issue(other, "alice", time.Hour, false) },
			status: 401, code: api.CodeUnauthenticated, fragments: []string{"not issued by this cluster"}},
		{name: "another CA with the same cluster name", cert: func() *tls.Certificate { return s.issue(sameName, "alice", time.Hour, false) },
			status: 401, code: api.CodeUnauthenticated, fragments: []string{"not issued by this cluster"}},
		{name: "never recorded", cert: func() *tls.Certificate { return s.issue(s.ca, "alice", time.Hour, false) },
			status: 401, code: api.CodeUnauthenticated, fragments: []string{"no record", "tunnel login"}},
		{name: "user removed", cert: func() *tls.Certificate {
			c := s.issue(s.ca, "carol", time.Hour, true)
			ev := audit.Event{Time: s.clock.Now(), Type: audit.UserDeleted, Actor: "system", Subject: "carol", Outcome: audit.Success}
			if err := s.store.DeleteUser(context.Background(), "carol", ev); err != nil {
				t.Fatal(err)
			}
			return c
		}, status: 401, code: api.CodeUnauthenticated, fragments: []string{"no longer exists"}},
		{name: "user locked", cert: func() *tls.Certificate {
			c := s.issue(s.ca, "dave", time.Hour, true)
			ev := audit.Event{Time: s.clock.Now(), Type: audit.UserLocked, Actor: "system", Subject: "dave", Outcome: audit.Success}
			if err := s.store.SetUserLocked(context.Background(), "dave", true, ev); err != nil {
				t.Fatal(err)
			}
			return c
		}, status: 403, code: api.CodeForbidden, fragments: []string{"locked"}},
		{name: "valid", cert: func() *tls.Certificate { return s.issue(s.ca, "alice", time.Hour, true) }, status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(s.client(tc.cert()), "GET", api.PathWhoami, nil)
			if tc.status != 200 {
				wantError(t, r, tc.status, tc.code, tc.fragments...)
				return
			}
			if r.status != 200 {
				t.Fatalf("got status %d (%s); want 200", r.status, r.body)
			}
			var w api.Whoami
			r.decode(t, &w)
			want := api.Whoami{User: "alice", Roles: []string{"dev"}, Logins: []string{"deploy", "ubuntu"}, NotAfter: s.clock.Now().Add(time.Hour)}
			if diff := cmp.Diff(want, w); diff != "" {
				t.Errorf("whoami (-want +got):\n%s", diff)
			}
		})
	}

	// Moving the gateway's clock past a valid certificate's end expires it.
	cert := s.issue(s.ca, "alice", time.Hour, true)
	s.clock.Advance(time.Hour + time.Second)
	wantError(t, s.do(s.client(cert), "GET", api.PathWhoami, nil), 401, api.CodeUnauthenticated, "expired", "tunnel login")
}

// admin sets up an admin role and user and returns a client holding the
// admin's certificate.
func (s *testServer) admin() *http.Client {
	s.t.Helper()
	s.addRole("admins", []string{"root"}, true)
	s.addUser("boss", "admins")
	return s.client(s.issue(s.ca, "boss", time.Hour, true))
}

func TestAdminDenied(t *testing.T) {
	s := newServer(t)
	s.addRole("dev", []string{"ubuntu"}, false)
	s.addUser("alice", "dev")
	c := s.client(s.issue(s.ca, "alice", time.Hour, true))

	for _, req := range []struct{ method, path string }{
		{"GET", api.PathUsers},
		{"POST", api.PathRoles},
		{"GET", api.PathAuditVerify},
		{"DELETE", api.PathUsers + "/alice"},
	} {
		t.Run(req.method+" "+req.path, func(t *testing.T) {
			evs, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			seq := evs[len(evs)-1].Seq
			var body any
			if req.method == "POST" {
				body = api.Role{Name: "sneaky", Logins: []string{"root"}, Admin: true}
			}
			wantError(t, s.do(c, req.method, req.path, body), 403, api.CodeForbidden, "admin role")
			evs, err = s.store.ListAudit(context.Background(), store.AuditFilter{AfterSeq: seq})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 {
				t.Fatalf("got %d events; want 1 admin.denied", len(evs))
			}
			ev := evs[0]
			if ev.Type != audit.AdminDenied || ev.Actor != "alice" || ev.Outcome != audit.Failure || ev.Details["request"] != req.method+" "+req.path {
				t.Errorf("got event %+v; want admin.denied by alice for %s %s", ev, req.method, req.path)
			}
			if ev.SourceIP != "127.0.0.1" {
				t.Errorf("got source IP %q; want 127.0.0.1", ev.SourceIP)
			}
		})
	}
	if _, err := s.store.GetRole(context.Background(), "sneaky"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRole(sneaky): got %v; want not found (the denied request changed something)", err)
	}
	s.verifyAudit()
}

func TestAdminUsersAndRoles(t *testing.T) {
	s := newServer(t)
	c := s.admin()

	// Roles.
	r := s.do(c, "POST", api.PathRoles, map[string]any{"name": "Dev", "logins": []string{"ubuntu", " deploy ", "ubuntu"}, "max_ttl": "2h"})
	if r.status != http.StatusCreated {
		t.Fatalf("create role: got %d (%s); want 201", r.status, r.body)
	}
	var role api.Role
	r.decode(t, &role)
	if diff := cmp.Diff(api.Role{Name: "dev", Logins: []string{"deploy", "ubuntu"}, MaxTTL: api.Duration(2 * time.Hour), CreatedAt: s.clock.Now()}, role); diff != "" {
		t.Errorf("created role (-want +got):\n%s", diff)
	}
	wantError(t, s.do(c, "POST", api.PathRoles, api.Role{Name: "dev"}), 409, api.CodeConflict, "dev")
	wantError(t, s.do(c, "POST", api.PathRoles, api.Role{Name: "big", MaxTTL: api.Duration(13 * time.Hour)}), 400, api.CodeBadRequest, "exceeds")
	wantError(t, s.do(c, "POST", api.PathRoles, api.Role{Name: "wild", Logins: []string{"*"}}), 400, api.CodeBadRequest, "login")

	// Users.
	r = s.do(c, "POST", api.PathUsers, api.CreateUserRequest{Name: "Bob", Roles: []string{"dev"}, Password: password})
	if r.status != http.StatusCreated {
		t.Fatalf("create user: got %d (%s); want 201", r.status, r.body)
	}
	var enr api.Enrollment
	r.decode(t, &enr)
	if enr.User != "bob" || !strings.HasPrefix(enr.URI, "otpauth://totp/") || enr.Secret == "" {
		t.Errorf("got enrolment %+v; want user bob and an otpauth://totp/ URI", enr)
	}
	tests := []struct {
		name      string
		body      any
		status    int
		code      string
		fragments []string
	}{
		{"duplicate user", api.CreateUserRequest{Name: "bob", Roles: []string{"dev"}, Password: password}, 409, api.CodeConflict, []string{"bob"}},
		{"duplicate user other case", api.CreateUserRequest{Name: " BOB ", Password: password}, 409, api.CodeConflict, []string{"bob"}},
		{"unknown role", api.CreateUserRequest{Name: "eve", Roles: []string{"dev", "nosuch"}, Password: password}, 400, api.CodeBadRequest, []string{`"nosuch"`, "does not exist"}},
		{"short password", api.CreateUserRequest{Name: "eve", Roles: []string{"dev"}, Password: "short"}, 400, api.CodeBadRequest, []string{"at least 12"}},
		{"bad name", api.CreateUserRequest{Name: "eve smith", Password: password}, 400, api.CodeBadRequest, []string{"name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(c, "POST", api.PathUsers, tc.body), tc.status, tc.code, tc.fragments...)
		})
	}
	if _, err := s.store.GetUser(context.Background(), "eve"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser(eve): got %v; want not found", err)
	}

	// An admin cannot lock or remove themselves.
	for _, p := range []struct{ method, path string }{
		{"POST", api.PathUsers + "/boss/lock"},
		{"POST", api.PathUsers + "/BOSS/lock"},
		{"DELETE", api.PathUsers + "/boss"},
	} {
		wantError(t, s.do(c, p.method, p.path, nil), 400, api.CodeBadRequest, "your own account")
	}

	// Lock, unlock, reset MFA, remove.
	listBob := func() api.User {
		t.Helper()
		r := s.do(c, "GET", api.PathUsers, nil)
		if r.status != 200 {
			t.Fatalf("list users: got %d (%s)", r.status, r.body)
		}
		var users []api.User
		r.decode(t, &users)
		for _, u := range users {
			if u.Name == "bob" {
				return u
			}
		}
		t.Fatalf("bob not in %+v", users)
		return api.User{}
	}
	wantStatus := func(r response, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("got status %d (%s); want %d", r.status, r.body, status)
		}
	}
	wantStatus(s.do(c, "POST", api.PathUsers+"/bob/lock", nil), http.StatusNoContent)
	if u := listBob(); !u.Locked {
		t.Errorf("after lock: got %+v; want locked", u)
	}
	wantStatus(s.do(c, "POST", api.PathUsers+"/bob/unlock", nil), http.StatusNoContent)
	if u := listBob(); u.Locked {
		t.Errorf("after unlock: got %+v; want not locked", u)
	}
	r = s.do(c, "POST", api.PathUsers+"/bob/reset-mfa", nil)
	wantStatus(r, 200)
	var enr2 api.Enrollment
	r.decode(t, &enr2)
	if enr2.User != "bob" || enr2.Secret == "" || enr2.Secret == enr.Secret {
		t.Errorf("got enrolment %+v after reset; want a new secret for bob", enr2)
	}
	wantError(t, s.do(c, "POST", api.PathUsers+"/nobody/reset-mfa", nil), 404, api.CodeNotFound, "nobody")
	wantError(t, s.do(c, "POST", api.PathUsers+"/nobody/lock", nil), 404, api.CodeNotFound, "nobody")

	// A role still held cannot be removed, and the answer says by whom.
	wantError(t, s.do(c, "DELETE", api.PathRoles+"/dev", nil), 409, api.CodeConflict, "still held", "bob")
	wantStatus(s.do(c, "DELETE", api.PathUsers+"/bob", nil), http.StatusNoContent)
	wantError(t, s.do(c, "DELETE", api.PathUsers+"/bob", nil), 404, api.CodeNotFound, "bob")
	wantStatus(s.do(c, "DELETE", api.PathRoles+"/dev", nil), http.StatusNoContent)
	wantError(t, s.do(c, "DELETE", api.PathRoles+"/dev", nil), 404, api.CodeNotFound, "dev")

	// The audit log holds each change, and verifies.
	r = s.do(c, "GET", api.PathAudit, nil)
	wantStatus(r, 200)
	var evs []audit.Event
	r.decode(t, &evs)
	var got []string
	for _, ev := range evs {
		if ev.Actor == "boss" && ev.Type != audit.CertIssued {
			got = append(got, string(ev.Type)+" "+ev.Subject)
		}
	}
	want := []string{"role.created dev", "user.created bob", "user.locked bob", "user.unlocked bob",
		"user.mfa_reset bob", "user.deleted bob", "role.deleted dev"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("admin events (-want +got):\n%s", diff)
	}
	r = s.do(c, "GET", api.PathAuditVerify, nil)
	wantStatus(r, 200)
	var v api.AuditVerify
	r.decode(t, &v)
	if !v.OK || v.Events != int64(len(evs)) || v.Head != evs[len(evs)-1].Hash {
		t.Errorf("got verify %+v; want OK over %d events ending at %s", v, len(evs), evs[len(evs)-1].Hash)
	}
	s.verifyAudit()
}

func TestBadBodies(t *testing.T) {
	s := newServer(t)
	c := s.admin()
	big := `{"name":"` + strings.Repeat("a", api.MaxBodySize) + `"}`
	tests := []struct {
		name, method, path, body string
	}{
		{"unknown field in role", "POST", api.PathRoles, `{"name":"dev","logins":[],"superuser":true}`},
		{"unknown field in user", "POST", api.PathUsers, `{"name":"bob","password":"` + password + `","admin":true}`},
		{"unknown field in login", "POST", api.PathLogin, `{"user":"bob","password":"x","otp":"123456","csr":"","ssh_public_key":"","root":1}`},
		{"oversize role", "POST", api.PathRoles, big},
		{"oversize login", "POST", api.PathLogin, big},
		{"trailing data", "POST", api.PathRoles, `{"name":"dev"} {"name":"ops"}`},
		{"not an object", "POST", api.PathRoles, `["dev"]`},
		{"null", "POST", api.PathUsers, `null`},
		{"empty", "POST", api.PathRoles, ``},
		{"negative duration", "POST", api.PathRoles, `{"name":"dev","max_ttl":"-1h"}`},
		{"numeric duration", "POST", api.PathRoles, `{"name":"dev","max_ttl":3600}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, s.do(c, tc.method, tc.path, tc.body), 400, api.CodeBadRequest)
		})
	}
	roles, err := s.store.ListRoles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(roles) != 1 {
		t.Errorf("got roles %+v; want only admins", roles)
	}
}

func TestRateLimit(t *testing.T) {
	s := newServer(t, func(a *apiserver.Server, clock *fakeClock) {
		a.Limiter = auth.NewIPLimiter(rate.Every(time.Minute), 2, clock.Now)
	})
	c := s.client(nil)
	for i := range 2 {
		if r := s.do(c, "GET", api.PathPing, nil); r.status != 200 {
			t.Fatalf("request %d: got %d; want 200", i+1, r.status)
		}
	}
	for _, path := range []string{api.PathPing, api.PathCA} {
		r := s.do(c, "GET", path, nil)
		wantError(t, r, 429, api.CodeRateLimited)
		if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
			t.Errorf("GET %s: got Retry-After %q; want 1 to 60 seconds", path, r.header.Get("Retry-After"))
		}
	}
	wantError(t, s.do(c, "POST", api.PathLogin, `{}`), 429, api.CodeRateLimited)
	s.clock.Advance(time.Minute)
	if r := s.do(c, "GET", api.PathPing, nil); r.status != 200 {
		t.Errorf("after a minute: got %d; want 200", r.status)
	}
}

func TestTLSVersion(t *testing.T) {
	s := newServer(t)
	addr := s.ts.Listener.Addr().String()
	tests := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"TLS 1.2 only", &tls.Config{MaxVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: true}, false},
		{"TLS 1.3 pinned", trust.PinnedClientConfig(s.ca.Pin(), serverName, s.clock.Now), true},
		{"TLS 1.3 wrong pin", trust.PinnedClientConfig("sha256:"+strings.Repeat("ab", 32), serverName, s.clock.Now), false},
		{"TLS 1.3 wrong name", trust.PinnedClientConfig(s.ca.Pin(), "gateway.example.com", s.clock.Now), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, tc.cfg)
			if err == nil {
				conn.Close()
			}
			if got := err == nil; got != tc.ok {
				t.Errorf("got handshake error %v; want success %v", err, tc.ok)
			}
		})
	}
}

// TestLoginOverHTTP tells the story of a user: created by an admin, logs
// in with the enrolment secret, uses the certificate, fails too often and
// is locked out with a Retry-After.
func TestLoginOverHTTP(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	if r := s.do(admin, "POST", api.PathRoles, api.Role{Name: "dev", Logins: []string{"ubuntu"}}); r.status != 201 {
		t.Fatalf("create role: %d %s", r.status, r.body)
	}
	r := s.do(admin, "POST", api.PathUsers, api.CreateUserRequest{Name: "bob", Roles: []string{"dev"}, Password: password})
	if r.status != 201 {
		t.Fatalf("create user: %d %s", r.status, r.body)
	}
	var enr api.Enrollment
	r.decode(t, &enr)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	loginReq := func(pw string) api.LoginRequest {
		code, err := totp.GenerateCode(enr.Secret, s.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return api.LoginRequest{User: "bob", Password: pw, OTP: code,
			CSR:          string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
			SSHPublicKey: string(ssh.MarshalAuthorizedKey(sshPub))}
	}
	anon := s.client(nil)

	r = s.do(anon, "POST", api.PathLogin, loginReq(password))
	if r.status != 200 {
		t.Fatalf("login: got %d (%s); want 200", r.status, r.body)
	}
	var lr api.LoginResponse
	r.decode(t, &lr)
	block, _ := pem.Decode([]byte(lr.X509Certificate))
	if block == nil {
		t.Fatalf("no certificate in %q", lr.X509Certificate)
	}
	cert := &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: priv}
	r = s.do(s.client(cert), "GET", api.PathWhoami, nil)
	if r.status != 200 {
		t.Fatalf("whoami with the login's certificate: got %d (%s); want 200", r.status, r.body)
	}
	var w api.Whoami
	r.decode(t, &w)
	if w.User != "bob" || w.Admin {
		t.Errorf("got whoami %+v; want bob, not admin", w)
	}

	// The same code again is a replay.
	r = s.do(anon, "POST", api.PathLogin, loginReq(password))
	wantError(t, r, 401, api.CodeReplayedCode)

	// Wrong passwords: four more failures lock bob out.
	for range 4 {
		wantError(t, s.do(anon, "POST", api.PathLogin, loginReq("wrong password!")), 401, api.CodeInvalidCredentials, "invalid credentials")
	}
	s.clock.Advance(auth.Period * time.Second)
	r = s.do(anon, "POST", api.PathLogin, loginReq(password))
	wantError(t, r, 429, api.CodeLockedOut, "try again")
	if got, want := r.header.Get("Retry-After"), strconv.Itoa(int((15*time.Minute - auth.Period*time.Second).Seconds())); got != want {
		t.Errorf("got Retry-After %q; want %q", got, want)
	}
	if e := r.apiError(t); e.RetryAfter != 870 {
		t.Errorf("got retry_after %d; want 870", e.RetryAfter)
	}

	// The admin sees the lockout, and unlocking lifts it.
	r = s.do(admin, "GET", api.PathUsers, nil)
	var users []api.User
	r.decode(t, &users)
	var bob api.User
	for _, u := range users {
		if u.Name == "bob" {
			bob = u
		}
	}
	if bob.LockedOutUntil == nil || !bob.LockedOutUntil.Equal(start.Add(15*time.Minute)) {
		t.Errorf("got bob %+v; want locked out until %v", bob, start.Add(15*time.Minute))
	}
	if r := s.do(admin, "POST", api.PathUsers+"/bob/unlock", nil); r.status != 204 {
		t.Fatalf("unlock: %d %s", r.status, r.body)
	}
	if r := s.do(anon, "POST", api.PathLogin, loginReq(password)); r.status != 200 {
		t.Errorf("login after unlock: got %d (%s); want 200", r.status, r.body)
	}
	s.verifyAudit()
}
