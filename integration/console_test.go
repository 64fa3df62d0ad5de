package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// consoleCookie is the web console's session cookie (gateway/internal/webui).
const consoleCookie = "__Host-tunnel-console"

// browser is a headless Chromium (Debian's chromium package) driven over
// the DevTools protocol, with what its pages logged.
type browser struct {
	t    *testing.T
	ctx  context.Context
	mu   sync.Mutex
	logs []string
	shot string // directory of the screenshots
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	chrome := testenv.LookPath(t, "chromium")
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		// The gateway's certificate is signed by the cluster's own CA,
		// which this throwaway profile does not trust.
		chromedp.IgnoreCertErrors,
		chromedp.WindowSize(1440, 900),
	)
	if testenv.IsRoot() {
		opts = append(opts, chromedp.NoSandbox)
	}
	b := &browser{t: t, shot: t.TempDir()}
	if d := os.Getenv("CONSOLE_SCREENSHOTS"); d != "" {
		b.shot = d // to look at them after the test
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithListener(b.note))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b.ctx = ctx
	// The first Run starts the browser and lives as long as ctx: no
	// timeout on it.
	if _, err := chromedp.Run(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatalf("start chromium (%s): %v", chrome, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the browser's log:\n%s", strings.Join(b.pageLogs(), "\n"))
		}
	})
	return b
}

// note keeps what the page logged: console messages, CSP violations,
// uncaught exceptions.
func (b *browser) note(ev any) {
	var line string
	switch ev := ev.(type) {
	case *cdplog.EventEntryAdded:
		line = string(ev.Entry.Level) + ": " + ev.Entry.Text
	case *runtime.EventExceptionThrown:
		line = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			line += " " + ev.ExceptionDetails.Exception.Description
		}
	}
	if line != "" {
		b.mu.Lock()
		b.logs = append(b.logs, line)
		b.mu.Unlock()
	}
}

func (b *browser) pageLogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.logs)
}

// run runs steps; a failure ends the test with a screenshot's path.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		path := b.screenshot("failure")
		b.t.Fatalf("%s: %v (screenshot: %s)", what, err, path)
	}
}

// text returns the text of the first element sel selects.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("read the text of %s: %v (screenshot: %s)", sel, err, b.screenshot("failure"))
	}
	return s
}

// screenshot saves the page as a PNG in the test's directory.
func (b *browser) screenshot(name string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.shot, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// page goes to a console page (#/NAME) and waits until it is drawn.
func (b *browser) page(name string) {
	b.t.Helper()
	b.run("open the console's "+name+" page",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("page").dataset.ready = ""; location.hash = "#/`+name+`"`),
		chromedp.WaitVisible(chromedp.CSS(`#page[data-ready="`+strings.Split(name, "/")[0]+`"]`)))
}

// cookie returns the console's cookie as the browser holds it (HttpOnly:
// the page's scripts cannot read it; the DevTools protocol can).
func (b *browser) cookie() string {
	b.t.Helper()
	var value string
	b.run("read the browser's cookies", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
		if err != nil {
			return err
		}
		for _, c := range res.Cookies {
			if c.Name == consoleCookie {
				if !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
					b.t.Errorf("the console cookie %+v; want Secure, HttpOnly, SameSite=Strict, Path=/", c)
				}
				value = c.Value
			}
		}
		return nil
	}))
	if value == "" {
		b.t.Fatal("the browser holds no console cookie")
	}
	return value
}

// consoleHTTP sends one request to the gateway as a browser with the
// console's cookie would, without the browser: the cookie, and the
// Origin and CSRF headers when given.
func consoleHTTP(t *testing.T, c *cluster, method, path, cookie, origin, csrf, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+c.addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: consoleCookie, Value: cookie})
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if csrf != "" {
		req.Header.Set("X-Tunnel-CSRF", csrf)
	}
	// Only the headers and refusals matter here, not who the server is.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// userRoles returns the roles of user name (admin users ls --json).
func userRoles(t *testing.T, admin *user, name string) []string {
	t.Helper()
	var users []api.User
	if err := json.Unmarshal([]byte(admin.must("admin", "users", "ls", "--json")), &users); err != nil {
		t.Fatalf("users ls --json: %v", err)
	}
	for _, u := range users {
		if u.Name == name {
			return u.Roles
		}
	}
	t.Fatalf("no user %s in users ls", name)
	return nil
}

// newConsoleEnv is newSSHEnv with the API served under an operator's
// ECDSA certificate (--tls-cert): browsers do not accept the Ed25519
// certificate the cluster CA issues the API (docs/CONSOLE.md). Clients
// and agents pin the operator's CA instead.
func newConsoleEnv(t *testing.T) *sshEnv {
	t.Helper()
	certFile, keyFile, pin := operatorCert(t)
	e := &sshEnv{login: testenv.CurrentUser(t)}
	e.c = startCluster(t, "--login-burst", "1000", "--tls-cert", certFile, "--tls-key", keyFile)
	e.c.pin = pin
	e.admin = e.c.adminUser()
	e.admin.login()
	e.admin.must("admin", "roles", "add", "ops", "--login", e.login, "--node", "web-*", "--service", "web-1/echo", "--max-ttl", "2h")
	e.bob = addUser(t, e.admin, "bob", "ops")
	e.bob.login()
	echo := serve(t, echoHandler)
	e.web = e.c.startAgent("web-1", e.admin.token("web-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	e.admin.waitOnline("web-1", true, 20*time.Second)
	return e
}

// operatorCert writes an ECDSA P-256 CA and a server certificate it signs
// for 127.0.0.1 and localhost; it returns the chain's and the key's files
// and the CA's pin.
func operatorCert(t *testing.T) (certFile, keyFile, pin string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "console test operator CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(23 * time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, trust.Pin(ca)
}

// TestConsole drives the web console in a real browser against a real
// gateway, agent and `tunnel ssh`: log in with password and a computed
// TOTP code, see bob's live session, revoke it with two clicks (his ssh
// exits with "access revoked by an administrator"), approve his access
// request (his next login carries the role), play a recording back; a
// POST without the CSRF token is refused, the CSP holds, a locked user's
// cookie stops working, and logging out ends the cookie.
func TestConsole(t *testing.T) {
	b := newBrowser(t)
	e := newConsoleEnv(t)
	base := "https://" + e.c.addr
	e.admin.must("admin", "roles", "add", "dba", "--login", e.login, "--node", "web-*", "--max-ttl", "1h")
	e.admin.must("admin", "roles", "add", "oncall-lead", "--approve", "dba")
	e.admin.must("admin", "users", "grant", e.c.admin, "oncall-lead")

	// The headers of the pages.
	status, body, h := consoleHTTP(t, e.c, "GET", "/ui/", "", "", "", "")
	if status != 200 || !strings.Contains(body, "tunnel console") {
		t.Fatalf("GET /ui/: %d %.300s", status, body)
	}
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("GET /ui/: Content-Security-Policy %q lacks %q", csp, d)
		}
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("GET /ui/: X-Content-Type-Options %q, Referrer-Policy %q", h.Get("X-Content-Type-Options"), h.Get("Referrer-Policy"))
	}

	// A finished session to play back later.
	if code, out, se := e.bob.exitCode("ssh", e.login+"@web-1", "echo", "played-back-$((40+2))"); code != 0 || !strings.Contains(out, "played-back-42") {
		t.Fatalf("tunnel ssh echo: exit %d, %q, %q", code, out, se)
	}

	// Log in: a wrong code first, then the right one.
	b.run("log in with a wrong code",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-user"), e.c.admin),
		chromedp.SendKeys(chromedp.CSS("#login-password"), e.c.adminPW),
		chromedp.SendKeys(chromedp.CSS("#login-otp"), wrongCode(e.c.adminOTP.current(t))),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#notice:not([hidden])")))
	notice := b.text("#notice")
	if !strings.Contains(notice, "invalid credentials") {
		t.Errorf("after a wrong code the console says %q; want tunnel login's \"invalid credentials\"", notice)
	}
	b.run("log in",
		// The page cleared the code and kept the rest.
		chromedp.SendKeys(chromedp.CSS("#login-otp"), e.c.adminOTP.next(t)),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nav")),
		chromedp.WaitVisible(chromedp.CSS(`#page[data-ready="sessions"]`)))
	cookie := b.cookie()

	// A live session, revoked from the browser.
	wait := e.startRemote(t, e.bob)
	id := e.activeSession(t, "bob")
	b.page("agents")
	b.page("sessions")
	row := `tr[data-session="` + id + `"]`
	b.run("see bob's live session", chromedp.WaitVisible(chromedp.CSS(row)))
	rowText := b.text(row)
	for _, want := range []string{"bob", e.login + "@web-1", "bastion"} {
		if !strings.Contains(rowText, want) {
			t.Errorf("the session's row %q lacks %q", rowText, want)
		}
	}
	shot := b.screenshot("sessions")
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		png, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "console.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	revoke := `button[data-revoke="` + id + `"]`
	b.run("click revoke, then confirm",
		chromedp.Click(chromedp.CSS(revoke)),
		chromedp.WaitVisible(chromedp.CSS(revoke+`.confirm`)),
		chromedp.Click(chromedp.CSS(revoke)),
		chromedp.WaitVisible(chromedp.CSS("#notice.ok")))
	code, out := wait(20 * time.Second)
	if code == 0 || code == -2 || !strings.Contains(out, "access revoked by an administrator") {
		t.Errorf("bob's ssh after the revoke button: exit %d, output %q; want it cut with 'access revoked by an administrator'", code, out)
	}
	b.run("see the session gone", chromedp.WaitNotPresent(chromedp.CSS(row)))

	// A POST from the page without the CSRF token: the browser sends the
	// cookie and its Origin, the gateway refuses.
	var refused struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](`fetch("/v1/admin/agents/web-1/lock", {method: "POST"}).then(async (r) => ({status: r.status, error: (await r.json()).error}))`, chromedp.EvalAwaitPromise))
	cancel()
	if err != nil {
		t.Fatalf("POST from the page without the CSRF token: %v", err)
	}
	if err := json.Unmarshal(raw, &refused); err != nil {
		t.Fatalf("POST from the page without the CSRF token answered %s: %v", raw, err)
	}
	if refused.Status != 403 || !strings.Contains(refused.Error, "CSRF token") {
		t.Errorf("a POST without the CSRF token: %+v; want 403 naming the CSRF token", refused)
	}
	if ls := e.admin.must("admin", "agents", "ls"); strings.Contains(ls, "locked") {
		t.Errorf("a refused POST locked the agent:\n%s", ls)
	}
	if st, body, _ := consoleHTTP(t, e.c, "POST", "/v1/admin/agents/web-1/lock", cookie, "https://evil.example", "", ""); st != 403 || !strings.Contains(body, "Origin") {
		t.Errorf("a POST from another origin: %d %s; want 403", st, body)
	}

	// Approve bob's access request in the browser; his next login
	// carries the role.
	bob := e.bob
	bob.must("request", "create", "--role", "dba", "--for", "30m", "--reason", "INC-7: console test")
	req := pendingOf(t, bob)
	b.page("requests")
	approve := `button[data-approve="` + req.ID + `"]`
	b.run("approve bob's request with a comment",
		chromedp.WaitVisible(chromedp.CSS(approve)),
		chromedp.SendKeys(chromedp.CSS(`input[data-comment="`+req.ID+`"]`), "approved in the console"),
		chromedp.Click(chromedp.CSS(approve)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-request="`+req.ID+`"] td.state-approved`)))
	b.screenshot("requests")
	bob.login()
	p, err := profile.Dir{Path: bob.home}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.Roles, "dba") {
		t.Errorf("bob's login after the approval in the console carries roles %v; want dba", p.Roles)
	}
	var shown []api.AccessRequest
	if err := json.Unmarshal([]byte(bob.must("request", "ls", "--all", "--json")), &shown); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(shown, func(r api.AccessRequest) bool { return r.ID == req.ID }); i < 0 || shown[i].State != "approved" || shown[i].DecidedBy != e.c.admin || shown[i].Comment != "approved in the console" {
		t.Errorf("bob's requests after the approval: %+v", shown)
	}

	// Play the first session back.
	var recorded string
	waitFor(t, 30*time.Second, "a session's recording to reach the gateway", func() bool {
		var list []struct {
			ID        string `json:"id"`
			State     string `json:"state"`
			Recording bool   `json:"recording"`
		}
		if err := json.Unmarshal([]byte(e.admin.must("admin", "sessions", "ls", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.Recording && s.State == "closed" {
				recorded = s.ID
				return true
			}
		}
		return false
	})
	b.page("play/" + recorded)
	b.run("play the recording to its end",
		chromedp.WaitVisible(chromedp.CSS("#player-end")),
		chromedp.Click(chromedp.CSS("#player-end")),
		chromedp.WaitVisible(chromedp.CSS(`#page[data-player-done="1"]`)))
	screen := b.text("#player-screen")
	if !strings.Contains(screen, "played-back-42") {
		t.Errorf("the player shows %q; want the session's output played-back-42", screen)
	}
	b.screenshot("playback")

	// The audit log page: filter and verify.
	b.page("audit")
	b.run("filter the audit log and verify it",
		chromedp.SendKeys(chromedp.CSS("#audit-type"), "session.*"),
		chromedp.Click(chromedp.CSS("#audit-filter")),
		chromedp.WaitVisible(chromedp.CSS(`#audit-list[data-filter="session.*"] table`)),
		chromedp.Click(chromedp.CSS("#audit-verify-button")),
		chromedp.WaitVisible(chromedp.CSS("#audit-verify.verify-ok")))
	if events := b.text("#audit-list"); !strings.Contains(events, "session.revoked") || strings.Contains(events, "login.success") {
		t.Errorf("the audit log filtered on session.*:\n%s\nwant session.revoked and no login.success", events)
	}
	if verdict := b.text("#audit-verify"); !strings.Contains(verdict, "chain intact") {
		t.Errorf("audit verify in the console says %q", verdict)
	}

	// Users: grant bob a role from the list and take it back with its ×.
	b.page("users")
	b.run("grant bob oncall-lead",
		chromedp.Evaluate[chromedp.Void](`document.querySelector('select[data-grant-select="bob"]').value = "oncall-lead"`),
		chromedp.Click(chromedp.CSS(`button[data-grant="bob"]`)),
		chromedp.WaitVisible(chromedp.CSS("#notice.ok")),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="revoke role oncall-lead from bob"]`)))
	if roles := userRoles(t, e.admin, "bob"); !slices.Contains(roles, "oncall-lead") {
		t.Errorf("bob's roles after the grant in the console: %v", roles)
	}
	b.run("revoke bob's oncall-lead",
		chromedp.Click(chromedp.CSS(`button[aria-label="revoke role oncall-lead from bob"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[aria-label="revoke role oncall-lead from bob"]`)))
	if roles := userRoles(t, e.admin, "bob"); slices.Contains(roles, "oncall-lead") {
		t.Errorf("bob's roles after the revoke in the console: %v", roles)
	}

	// Agents: lock web-1 (two clicks), then unlock it.
	b.page("agents")
	lockAgent := `button[data-lock-agent="web-1"]`
	b.run("lock web-1",
		chromedp.Click(chromedp.CSS(lockAgent)),
		chromedp.WaitVisible(chromedp.CSS(lockAgent+".confirm")),
		chromedp.Click(chromedp.CSS(lockAgent)),
		chromedp.WaitVisible(chromedp.CSS(`button[data-unlock-agent="web-1"]`)))
	if ls := e.admin.must("admin", "agents", "ls"); !strings.Contains(ls, "locked") {
		t.Errorf("after the lock in the console, agents ls:\n%s", ls)
	}
	b.run("unlock web-1",
		chromedp.Click(chromedp.CSS(`button[data-unlock-agent="web-1"]`)),
		chromedp.WaitVisible(chromedp.CSS(lockAgent)))

	// A locked user's cookie stops working, and stays dead after the
	// unlock (the lock revoked the certificate it carries).
	status, body, h = consoleHTTP(t, e.c, "POST", "/ui/api/login", "", base, "",
		fmt.Sprintf(`{"user":"bob","password":%q,"otp":%q}`, bob.pw, bob.otp.next(t)))
	if status != 200 {
		t.Fatalf("bob's console login: %d %s", status, body)
	}
	var bobCookie string
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == consoleCookie {
			bobCookie = c.Value
		}
	}
	if st, body, _ := consoleHTTP(t, e.c, "GET", "/v1/whoami", bobCookie, "", "", ""); st != 200 || !strings.Contains(body, `"bob"`) {
		t.Fatalf("whoami with bob's console cookie: %d %s", st, body)
	}
	e.admin.must("admin", "users", "lock", "bob")
	if st, body, _ := consoleHTTP(t, e.c, "GET", "/v1/whoami", bobCookie, "", "", ""); st != 403 || !strings.Contains(body, "your account is locked") {
		t.Errorf("bob's console cookie after the lock: %d %s; want 403 'your account is locked'", st, body)
	}
	e.admin.must("admin", "users", "unlock", "bob")
	if st, body, _ := consoleHTTP(t, e.c, "GET", "/v1/whoami", bobCookie, "", "", ""); st != 401 || !strings.Contains(body, "console session ended") {
		t.Errorf("bob's console cookie after the unlock: %d %s; want 401, the session ended", st, body)
	}

	// Log out: the cookie is dead everywhere, not only in this browser.
	b.run("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	if st, body, _ := consoleHTTP(t, e.c, "GET", "/v1/whoami", cookie, "", "", ""); st != 401 || !strings.Contains(body, "logged out") {
		t.Errorf("the console cookie after logout: %d %s; want 401", st, body)
	}

	for _, l := range b.pageLogs() {
		if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") {
			t.Errorf("the page logged: %s", l)
		}
	}
}
