package apiserver_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/gateway/internal/webui"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// consoleSession is a browser's view of a console login.
type consoleSession struct {
	cookie string
	csrf   string
	admin  bool
}

// consoleDo sends a request as the console page would: the cookie, and
// for a change the Origin and the CSRF token (when set).
func (s *testServer) consoleDo(method, path, cookie, origin, csrf, body string) response {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.ts.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: webui.CookieName, Value: cookie})
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if csrf != "" {
		req.Header.Set(webui.CSRFHeader, csrf)
	}
	resp, err := s.client(nil).Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (s *testServer) consoleLoginBody(name, code string) string {
	return `{"user":"` + name + `","password":"` + password + `","otp":"` + code + `"}`
}

// consoleLogin logs name in through the console with a fresh code.
func (s *testServer) consoleLogin(name, secret string) consoleSession {
	s.t.Helper()
	s.clock.Advance(auth.Period * time.Second)
	code, err := totp.GenerateCode(secret, s.clock.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	r := s.consoleDo("POST", "/ui/api/login", "", s.ts.URL, "", s.consoleLoginBody(name, code))
	if r.status != 200 {
		s.t.Fatalf("console login as %s: %d %s", name, r.status, r.body)
	}
	var out struct {
		User  string `json:"user"`
		CSRF  string `json:"csrf"`
		Admin bool   `json:"admin"`
	}
	r.decode(s.t, &out)
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == webui.CookieName {
			cookie = c
		}
	}
	if cookie == nil {
		s.t.Fatalf("console login set no %s cookie: %v", webui.CookieName, r.header["Set-Cookie"])
	}
	if !cookie.Secure || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		s.t.Errorf("console cookie %+v; want Secure, HttpOnly, SameSite=Strict, Path=/", cookie)
	}
	if out.User != name || out.CSRF == "" {
		s.t.Fatalf("console login answered %s", r.body)
	}
	return consoleSession{cookie: cookie.Value, csrf: out.CSRF, admin: out.Admin}
}

func wantConsoleHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("%s: Content-Security-Policy %q lacks %q", what, csp, d)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("%s: Content-Security-Policy %q allows something unsafe", what, csp)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("%s: X-Content-Type-Options %q, Referrer-Policy %q", what, h.Get("X-Content-Type-Options"), h.Get("Referrer-Policy"))
	}
}

func TestConsolePages(t *testing.T) {
	s := newServer(t)
	r := s.consoleDo("GET", "/ui/", "", "", "", "")
	if r.status != 200 || !strings.Contains(string(r.body), "<title>tunnel console</title>") {
		t.Fatalf("GET /ui/: %d %.200s", r.status, r.body)
	}
	wantConsoleHeaders(t, "GET /ui/", r.header)
	r = s.consoleDo("GET", "/ui/js/app.js", "", "", "", "")
	if r.status != 200 || !strings.Contains(r.header.Get("Content-Type"), "javascript") {
		t.Errorf("GET /ui/js/app.js: %d, Content-Type %q", r.status, r.header.Get("Content-Type"))
	}
	wantError(t, s.consoleDo("GET", "/ui/js/", "", "", "", ""), 404, api.CodeNotFound, "no such console page")
	wantError(t, s.consoleDo("GET", "/ui/api/session", "", "", "", ""), 401, api.CodeUnauthenticated, "not logged in")
}

// The console's login is tunnel login's: wrong codes are refused alike
// and count, a code is used once, and the cookie stands in for the
// certificate on the JSON API.
func TestConsoleLogin(t *testing.T) {
	s := newServer(t)
	s.addRole("admins", nil, true)
	secret := s.addUser("alice", "admins")
	body := func(code string) string { return s.consoleLoginBody("alice", code) }
	code, err := totp.GenerateCode(secret, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}

	wantError(t, s.consoleDo("POST", "/ui/api/login", "", "", "", body(code)), 403, api.CodeForbidden, "own console page")
	wantError(t, s.consoleDo("POST", "/ui/api/login", "", "https://evil.example", "", body(code)), 403, api.CodeForbidden, "own console page")
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	wantError(t, s.consoleDo("POST", "/ui/api/login", "", s.ts.URL, "", body(wrong)), 401, api.CodeInvalidCredentials, "invalid credentials")
	if n := loginFailures(t, s, "alice"); n != 1 {
		t.Errorf("after a wrong code in the console: %d failed logins on record; want 1 (the lockout counts it)", n)
	}

	r := s.consoleDo("POST", "/ui/api/login", "", s.ts.URL, "", body(code))
	if r.status != 200 {
		t.Fatalf("console login: %d %s", r.status, r.body)
	}
	wantError(t, s.consoleDo("POST", "/ui/api/login", "", s.ts.URL, "", body(code)), 401, api.CodeReplayedCode, "already used")

	sess := s.consoleLogin("alice", secret)
	if !sess.admin {
		t.Error("alice's console session says she is no admin")
	}
	r = s.consoleDo("GET", api.PathWhoami, sess.cookie, "", "", "")
	var who api.Whoami
	if r.status != 200 {
		t.Fatalf("whoami with the console cookie: %d %s", r.status, r.body)
	}
	r.decode(t, &who)
	if who.User != "alice" || !who.Admin {
		t.Errorf("whoami with the console cookie: %+v", who)
	}
	wantConsoleHeaders(t, "an API answer to the console", r.header)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("an API answer to the console: Cache-Control %q; want no-store", r.header.Get("Cache-Control"))
	}
	r = s.consoleDo("GET", "/ui/api/session", sess.cookie, "", "", "")
	if r.status != 200 || !strings.Contains(string(r.body), sess.csrf) {
		t.Errorf("GET /ui/api/session: %d %s; want the session's CSRF token", r.status, r.body)
	}

	// A cookie opens no bastion session (no SSH certificate from a browser).
	wantError(t, s.consoleDo("POST", api.PathSessions, sess.cookie, s.ts.URL, sess.csrf, `{"node":"web-1","login":"root","ssh_public_key":"x"}`),
		403, api.CodeForbidden, "cannot open bastion sessions")

	// An altered cookie is nobody's.
	wantError(t, s.consoleDo("GET", api.PathWhoami, sess.cookie[:len(sess.cookie)-4]+"AAAA", "", "", ""), 401, api.CodeUnauthenticated, "console session is not valid")
}

func loginFailures(t *testing.T, s *testServer, name string) int {
	t.Helper()
	n := 0
	evs, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == audit.LoginFailure && e.Subject == name {
			n++
		}
	}
	return n
}

// Every change needs the console's Origin and CSRF token; a lock, a
// removal and a logout end the cookie; so does 15 minutes of idleness.
func TestConsoleCSRFAndRevocation(t *testing.T) {
	s := newServer(t)
	s.addRole("admins", nil, true)
	s.addRole("dev", []string{"ubuntu"}, false)
	aliceSecret := s.addUser("alice", "admins")
	bobSecret := s.addUser("bob", "dev")
	carolSecret := s.addUser("carol", "dev")
	alice := s.consoleLogin("alice", aliceSecret)
	bob := s.consoleLogin("bob", bobSecret)
	carol := s.consoleLogin("carol", carolSecret)
	lockBob := api.PathUsers + "/bob/lock"

	wantError(t, s.consoleDo("POST", lockBob, alice.cookie, s.ts.URL, "", ""), 403, api.CodeForbidden, "lacks the console's CSRF token")
	wantError(t, s.consoleDo("POST", lockBob, alice.cookie, s.ts.URL, bob.csrf, ""), 403, api.CodeForbidden, "lacks the console's CSRF token")
	wantError(t, s.consoleDo("POST", lockBob, alice.cookie, "", alice.csrf, ""), 403, api.CodeForbidden, "Origin is missing or foreign")
	wantError(t, s.consoleDo("POST", lockBob, alice.cookie, "https://evil.example", alice.csrf, ""), 403, api.CodeForbidden, "Origin is missing or foreign")
	if u, _ := s.store.GetUser(context.Background(), "bob"); u.Locked {
		t.Fatal("a refused request locked bob")
	}
	// A non-admin's cookie opens no admin endpoint.
	wantError(t, s.consoleDo("POST", lockBob, carol.cookie, s.ts.URL, carol.csrf, ""), 403, api.CodeForbidden, "admin role")

	if r := s.consoleDo("GET", api.PathWhoami, bob.cookie, "", "", ""); r.status != 200 {
		t.Fatalf("bob's cookie before the lock: %d %s", r.status, r.body)
	}
	if r := s.consoleDo("POST", lockBob, alice.cookie, s.ts.URL, alice.csrf, ""); r.status != 200 && r.status != 204 {
		t.Fatalf("lock bob from the console: %d %s", r.status, r.body)
	}
	wantError(t, s.consoleDo("GET", api.PathWhoami, bob.cookie, "", "", ""), 403, api.CodeForbidden, "your account is locked")

	if r := s.consoleDo("DELETE", api.PathUsers+"/carol", alice.cookie, s.ts.URL, alice.csrf, ""); r.status != 200 && r.status != 204 {
		t.Fatalf("remove carol from the console: %d %s", r.status, r.body)
	}
	wantError(t, s.consoleDo("GET", api.PathWhoami, carol.cookie, "", "", ""), 401, api.CodeUnauthenticated, "console session ended", "log in again")

	// Idle: a request 13 minutes later (14 after the login) keeps it open
	// and refreshes the cookie; 15 minutes without one end it.
	s.clock.Advance(13 * time.Minute)
	r := s.consoleDo("GET", api.PathWhoami, alice.cookie, "", "", "")
	if r.status != 200 {
		t.Fatalf("alice's cookie after 14 minutes: %d %s", r.status, r.body)
	}
	var fresh string
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == webui.CookieName {
			fresh = c.Value
		}
	}
	if fresh == "" {
		t.Fatal("an answer minutes after the last refresh did not refresh the cookie")
	}
	s.clock.Advance(14 * time.Minute)
	if r := s.consoleDo("GET", api.PathWhoami, fresh, "", "", ""); r.status != 200 {
		t.Errorf("the refreshed cookie 14 minutes later: %d %s", r.status, r.body)
	}
	wantError(t, s.consoleDo("GET", api.PathWhoami, alice.cookie, "", "", ""), 401, api.CodeUnauthenticated, "timed out")

	// Logout revokes the session's certificate: the cookie is dead even
	// though it was not altered or timed out.
	r = s.consoleDo("POST", "/ui/api/logout", fresh, s.ts.URL, alice.csrf, "")
	if r.status != 200 {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if sc := r.header.Values("Set-Cookie"); len(sc) == 0 || !strings.Contains(sc[len(sc)-1], "Max-Age=0") {
		t.Errorf("logout's Set-Cookie %q; want the cookie cleared", sc)
	}
	wantError(t, s.consoleDo("GET", api.PathWhoami, fresh, "", "", ""), 401, api.CodeUnauthenticated, "console session ended", "logged out")
	s.verifyAudit()
}
