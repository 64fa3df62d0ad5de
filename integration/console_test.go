package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
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
	"github.com/chromedp/cdproto/security"
	"github.com/chromedp/chromedp"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// consoleCookie is the web console's session cookie (gateway/internal/webui).
const consoleCookie = "__Host-tunnel-console"

// browser is a headless Chromium (Debian's chromium package) driven over
// the DevTools protocol, with what its pages logged.
type browser struct {
	t      *testing.T
	ctx    context.Context
	cancel func()
	mu     sync.Mutex
	logs   []string
	shot   string // directory of the screenshots
}

// newBrowser starts a headless Chromium that trusts exactly the CA
// certificates in caPEM (none if it is empty) and checks every
// certificate, as a person's browser does once they have imported the
// cluster CA. Chromium on Linux takes its locally trusted CAs from the NSS
// database in $HOME/.pki/nssdb: the browser gets a HOME of its own whose
// database certutil (Debian's libnss3-tools) makes, trusting each CA to
// identify web sites ("C,,").
func newBrowser(t *testing.T, caPEM string) *browser {
	t.Helper()
	chrome := testenv.LookPath(t, "chromium")
	home := t.TempDir()
	nssDB(t, home, caPEM)
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("HOME="+home),
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
	b.cancel = func() { cancelCtx(); cancelAlloc() }
	t.Cleanup(b.cancel)
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

// nssDB makes the NSS database of a browser whose HOME is home, trusting
// each certificate of caPEM as a CA for web sites.
func nssDB(t *testing.T, home, caPEM string) {
	t.Helper()
	certutil := testenv.LookPath(t, "certutil")
	dir := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db := "sql:" + dir
	certutilRun := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	certutilRun("-N", "-d", db, "--empty-password")
	rest := []byte(caPEM)
	for i := 1; ; i++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		file := filepath.Join(home, fmt.Sprintf("ca-%d.pem", i))
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o644); err != nil {
			t.Fatal(err)
		}
		certutilRun("-A", "-d", db, "-n", fmt.Sprintf("tunnel cluster CA %d", i), "-t", "C,,", "-a", "-i", file)
	}
}

// rootsOf is a pool of the certificates in caPEM.
func rootsOf(t *testing.T, caPEM string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("no CA certificate in %q", caPEM)
	}
	return pool
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

// navigate opens url and returns the browser's response for the page.
func (b *browser) navigate(url string) (*network.Response, error) {
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	return chromedp.Run(ctx, chromedp.NavigateResponse(url))
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

// gatewaySite is the console's gateway as a browser reaches it: its
// address and the CA certificates a browser trusts it with.
type gatewaySite struct {
	addr  string
	roots *x509.CertPool
}

// consoleHTTP sends one request to the gateway as a browser with the
// console's cookie would, without the browser: the cookie, and the
// Origin and CSRF headers when given.
func consoleHTTP(t *testing.T, gw gatewaySite, method, path, cookie, origin, csrf, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+gw.addr+path, rd)
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
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: gw.roots, MinVersion: tls.VersionTLS13}}
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

// TestConsole drives the web console in a real browser against a real
// gateway on its defaults, agent and `tunnel ssh`. The browser checks
// certificates and trusts only the cluster CA (`tunnel ca --type x509`,
// imported into its NSS database): it opens the console under the
// certificate the cluster CA issues the gateway, and a browser without
// that CA refuses it. Then: log in with password and a computed
// TOTP code, see bob's live session, revoke it with two clicks (his ssh
// exits with "access revoked by an administrator"), approve his access
// request (his next login carries the role), play a recording back; a
// POST without the CSRF token is refused, the CSP holds, a locked user's
// cookie stops working, and logging out ends the cookie.
func TestConsole(t *testing.T) {
	testenv.LookPath(t, "chromium")
	testenv.LookPath(t, "certutil")
	// The gateway on its defaults: the API is served under its own
	// certificate, which the cluster CA issues (no --tls-cert).
	e := newSSHEnv(t)
	// The cluster CA as a user gets it to import into a browser.
	caPEM := e.admin.must("ca", "--type", "x509")
	gw := gatewaySite{addr: e.c.addr, roots: rootsOf(t, caPEM)}
	base := "https://" + e.c.addr

	// A browser that does not trust the cluster CA refuses the gateway:
	// the certificate check is on.
	untrusting := newBrowser(t, "")
	if _, err := untrusting.navigate(base + "/ui/"); err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
		t.Fatalf("a browser that does not trust the cluster CA opened %s/ui/: %v; want net::ERR_CERT_AUTHORITY_INVALID", base, err)
	}
	untrusting.cancel()

	// A browser that trusts the cluster CA, and nothing else, opens the
	// console over a connection it deems secure: TLS 1.3, the certificate
	// the cluster CA issued the gateway, an ECDSA P-256 signature.
	b := newBrowser(t, caPEM)
	resp, err := b.navigate(base + "/ui/")
	if err != nil {
		t.Fatalf("a browser that trusts the cluster CA cannot open the console: %v (docs/CONSOLE.md)", err)
	}
	if sd := resp.SecurityDetails; resp.SecurityState != security.StateSecure || sd == nil || sd.Protocol != "TLS 1.3" ||
		sd.Issuer != e.c.name+" tunnel CA" || sd.ServerSignatureAlgorithm != int64(tls.ECDSAWithP256AndSHA256) {
		t.Errorf("the console's page: security state %q, details %+v; want secure, TLS 1.3, issued by %q, ECDSA P-256 signature",
			resp.SecurityState, sd, e.c.name+" tunnel CA")
	}
	e.admin.must("admin", "roles", "add", "dba", "--login", e.login, "--node", "web-*", "--max-ttl", "1h")
	e.admin.must("admin", "roles", "add", "oncall-lead", "--approve", "dba")
	e.admin.must("admin", "users", "grant", e.c.admin, "oncall-lead")

	// The headers of the pages.
	status, body, h := consoleHTTP(t, gw, "GET", "/ui/", "", "", "", "")
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
	if st, body, _ := consoleHTTP(t, gw, "POST", "/v1/admin/agents/web-1/lock", cookie, "https://evil.example", "", ""); st != 403 || !strings.Contains(body, "Origin") {
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
	status, body, h = consoleHTTP(t, gw, "POST", "/ui/api/login", "", base, "",
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
	if st, body, _ := consoleHTTP(t, gw, "GET", "/v1/whoami", bobCookie, "", "", ""); st != 200 || !strings.Contains(body, `"bob"`) {
		t.Fatalf("whoami with bob's console cookie: %d %s", st, body)
	}
	e.admin.must("admin", "users", "lock", "bob")
	if st, body, _ := consoleHTTP(t, gw, "GET", "/v1/whoami", bobCookie, "", "", ""); st != 403 || !strings.Contains(body, "your account is locked") {
		t.Errorf("bob's console cookie after the lock: %d %s; want 403 'your account is locked'", st, body)
	}
	e.admin.must("admin", "users", "unlock", "bob")
	if st, body, _ := consoleHTTP(t, gw, "GET", "/v1/whoami", bobCookie, "", "", ""); st != 401 || !strings.Contains(body, "console session ended") {
		t.Errorf("bob's console cookie after the unlock: %d %s; want 401, the session ended", st, body)
	}

	// Log out: the cookie is dead everywhere, not only in this browser.
	b.run("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	if st, body, _ := consoleHTTP(t, gw, "GET", "/v1/whoami", cookie, "", "", ""); st != 401 || !strings.Contains(body, "logged out") {
		t.Errorf("the console cookie after logout: %d %s; want 401", st, body)
	}

	for _, l := range b.pageLogs() {
		if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") {
			t.Errorf("the page logged: %s", l)
		}
	}
}

// TestConsoleAfterRotation: on a cluster made with an Ed25519 X.509 CA (as
// clusters were before ECDSA P-256 became the default) browsers refuse the
// gateway's certificate; rotating the X.509 CA, the documented way out
// (docs/CONSOLE.md), gives the cluster an ECDSA P-256 CA, and once it
// signs, a browser that trusts it opens the console over a chain that also
// carries the Ed25519 cross-signature, while the CLI and the agent, which
// pinned the Ed25519 CA, keep working.
func TestConsoleAfterRotation(t *testing.T) {
	testenv.LookPath(t, "chromium")
	testenv.LookPath(t, "certutil")
	c := startCluster(t, "--login-burst", "1000")
	c.stop()
	c.pin = useEd25519X509CA(t, c)
	c.start("--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	c.startAgent("web-1", admin.token("web-1"), "")
	admin.waitOnline("web-1", true, 20*time.Second)
	base := "https://" + c.addr
	if first := caCertsOf(t, admin.must("ca", "--type", "x509"))[0]; first.PublicKeyAlgorithm != x509.Ed25519 {
		t.Fatalf("the cluster's X.509 CA is %v; want the Ed25519 one the test made", first.PublicKeyAlgorithm)
	}

	// Before: the certificate is signed with Ed25519, which the browser
	// refuses whatever it trusts (and NSS cannot even import that CA).
	before := newBrowser(t, "")
	if _, err := before.navigate(base + "/ui/"); err == nil || !strings.Contains(err.Error(), "ERR_CERT_INVALID") {
		t.Fatalf("a browser opened the console of a cluster with an Ed25519 CA: %v; want net::ERR_CERT_INVALID", err)
	}
	before.cancel()

	admin.must("admin", "ca", "rotate", "start", "--kind", "x509")
	// The admin's and the agent's certificates predate the start: force.
	admin.must("admin", "ca", "rotate", "activate", "--kind", "x509", "--force")
	var newCA *x509.Certificate
	waitFor(t, 30*time.Second, "the gateway to sign with the new ECDSA CA", func() bool {
		newCA = caCertsOf(t, admin.must("ca", "--type", "x509"))[0]
		return newCA.PublicKeyAlgorithm == x509.ECDSA
	})

	// After: a browser that trusts only the new CA opens the console.
	b := newBrowser(t, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: newCA.Raw})))
	resp, err := b.navigate(base + "/ui/")
	if err != nil {
		t.Fatalf("after the rotation a browser that trusts the new CA cannot open the console: %v", err)
	}
	if sd := resp.SecurityDetails; resp.SecurityState != security.StateSecure || sd == nil ||
		sd.ServerSignatureAlgorithm != int64(tls.ECDSAWithP256AndSHA256) {
		t.Errorf("the console's page after the rotation: security state %q, details %+v; want secure, ECDSA P-256", resp.SecurityState, sd)
	}
	b.run("see the login form", chromedp.WaitVisible(chromedp.CSS("#login-form")))

	// The CLI (its profile pins the Ed25519 CA) and the agent keep working.
	admin.must("admin", "agents", "ls")
	admin.waitOnline("web-1", true, 20*time.Second)
	admin.login()
}

// caCertsOf parses the PEM certificates in s, at least one.
func caCertsOf(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in %q", s)
	}
	return out
}

// useEd25519X509CA gives the stopped cluster c an Ed25519 X.509 CA in
// place of the one init made, as clusters were made before ECDSA P-256
// became the default: sealed with the cluster's KEK and swapped in through
// the store's rotation steps. It returns the new CA pin.
func useEd25519X509CA(t *testing.T, c *cluster) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(c.dataDir, "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kek, err := seal.NewKeyFileSealer(filepath.Join(c.dataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	var keys [3]ed25519.PrivateKey
	for i := range keys {
		if _, keys[i], err = ed25519.GenerateKey(nil); err != nil {
			t.Fatal(err)
		}
	}
	old, err := certs.GenerateWith(certs.Config{Cluster: c.name}, certs.Signers{X509: keys[0], SSHUser: keys[1], SSHHost: keys[2]})
	if err != nil {
		t.Fatal(err)
	}
	made, err := old.Export(kek)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.CAKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := func(typ audit.Type) audit.Event {
		return audit.Event{Time: time.Now().UTC().Truncate(time.Microsecond), Type: typ, Actor: "system", Subject: "x509", Outcome: audit.Success}
	}
	for _, k := range made {
		if k.Kind != string(store.CertX509) {
			continue
		}
		if err := st.AddCAKey(ctx, k, ev(audit.CARotationStarted)); err != nil {
			t.Fatal(err)
		}
		if err := st.ActivateCAKey(ctx, k.Kind, k.Public, time.Now(), ev(audit.CARotationActivated)); err != nil {
			t.Fatal(err)
		}
		for _, s := range stored {
			if s.Kind == k.Kind {
				if err := st.RemoveCAKey(ctx, s.Kind, s.Public, ev(audit.CARotationFinished)); err != nil {
					t.Fatal(err)
				}
			}
		}
		return certs.CAFingerprint(k)
	}
	t.Fatal("no X.509 CA key made")
	return ""
}
