package webui_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/webui"
	"github.com/tunnelhq/tunnel/pkg/seal"
)

var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func sealer(t *testing.T) seal.Sealer {
	t.Helper()
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := seal.NewAESGCM(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSession(t *testing.T, certEnd time.Time) webui.Session {
	t.Helper()
	s, err := webui.New([]byte("certificate DER"), certEnd, t0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSessionRoundTrip(t *testing.T) {
	sl := sealer(t)
	s := newSession(t, t0.Add(time.Hour))
	if s.End != t0.Add(time.Hour) {
		t.Errorf("End = %v; want the certificate's end %v", s.End, t0.Add(time.Hour))
	}
	if long := newSession(t, t0.Add(48*time.Hour)); long.End != t0.Add(webui.MaxLifetime) {
		t.Errorf("End of a 48 h certificate = %v; want capped at %v", long.End, t0.Add(webui.MaxLifetime))
	}
	if tok, err := base64.RawURLEncoding.DecodeString(s.CSRF); err != nil || len(tok) != 32 {
		t.Errorf("CSRF token %q: %v; want 32 random bytes", s.CSRF, err)
	}
	if other := newSession(t, t0.Add(time.Hour)); other.CSRF == s.CSRF {
		t.Error("two sessions got the same CSRF token")
	}
	v, err := s.Seal(sl)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v, s.CSRF) || bytes.Contains([]byte(v), []byte("certificate DER")) {
		t.Error("the cookie value shows its contents in the clear")
	}
	got, err := webui.Open(sl, v, t0.Add(5*time.Minute))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(got.Cert, s.Cert) || got.CSRF != s.CSRF || !got.End.Equal(s.End) {
		t.Errorf("Open = %+v; want %+v", got, s)
	}
}

func TestSessionRefusals(t *testing.T) {
	sl := sealer(t)
	s := newSession(t, t0.Add(time.Hour))
	v, err := s.Seal(sl)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(v)
	flipped := bytes.Clone(raw)
	flipped[len(flipped)/2] ^= 1
	otherKey, err := s.Seal(sealer(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		value string
		at    time.Time
		want  error
	}{
		{"altered", base64.RawURLEncoding.EncodeToString(flipped), t0, webui.ErrInvalid},
		{"another key's", otherKey, t0, webui.ErrInvalid},
		{"not base64", "!!!" + v, t0, webui.ErrInvalid},
		{"oversize", strings.Repeat("A", 5000), t0, webui.ErrInvalid},
		{"empty", "", t0, webui.ErrInvalid},
		{"idle 15 minutes", v, t0.Add(webui.IdleTimeout), webui.ErrIdle},
		{"past its end", v, t0.Add(time.Hour), webui.ErrExpired},
	} {
		if _, err := webui.Open(sl, tc.value, tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: Open = %v; want %v", tc.name, err, tc.want)
		}
	}
	if _, err := webui.Open(sl, v, t0.Add(webui.IdleTimeout-time.Second)); err != nil {
		t.Errorf("a session used 14m59s ago: %v; want it open", err)
	}
}

// A session kept in use stays open until its end, never past it.
func TestSessionTouch(t *testing.T) {
	sl := sealer(t)
	s := newSession(t, t0.Add(48*time.Hour))
	if _, send := s.Touch(t0.Add(30 * time.Second)); send {
		t.Error("Touch after 30 s asks to send the cookie again; want it kept")
	}
	now := t0
	for now.Before(t0.Add(webui.MaxLifetime - webui.IdleTimeout)) {
		now = now.Add(10 * time.Minute)
		v, err := s.Seal(sl)
		if err != nil {
			t.Fatal(err)
		}
		if s, err = webui.Open(sl, v, now); err != nil {
			t.Fatalf("at %s: %v; want a session in use to stay open", now.Sub(t0), err)
		}
		var send bool
		if s, send = s.Touch(now); !send || !s.Seen.Equal(now) {
			t.Fatalf("Touch at %s: send %v, seen %v", now.Sub(t0), send, s.Seen)
		}
	}
	v, _ := s.Seal(sl)
	if _, err := webui.Open(sl, v, t0.Add(webui.MaxLifetime)); !errors.Is(err, webui.ErrExpired) {
		t.Errorf("at the maximum lifetime: %v; want ErrExpired", err)
	}
}

func TestCookieAttributes(t *testing.T) {
	s := newSession(t, t0.Add(time.Hour))
	c := s.Cookie("v", t0)
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" ||
		!strings.HasPrefix(c.Name, "__Host-") || c.MaxAge != 3600 {
		t.Errorf("cookie %+v; want __Host-, Secure, HttpOnly, SameSite=Strict, Path=/, no Domain, Max-Age 3600", c)
	}
	if cl := webui.ClearCookie(); cl.MaxAge >= 0 || cl.Name != c.Name || !cl.Secure {
		t.Errorf("clear cookie %+v", cl)
	}
}

func TestCheckRequest(t *testing.T) {
	s := newSession(t, t0.Add(time.Hour))
	req := func(method, origin, site, token string) *http.Request {
		r := httptest.NewRequest(method, "https://gw.example:8443/v1/admin/users/bob/lock", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		if token != "" {
			r.Header.Set(webui.CSRFHeader, token)
		}
		return r
	}
	const self = "https://gw.example:8443"
	wrong := s.CSRF[:len(s.CSRF)-1] + "x"
	if wrong == s.CSRF {
		wrong = s.CSRF[:len(s.CSRF)-1] + "y"
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string // fragment of the refusal, "" for accepted
	}{
		{"GET needs no token", req("GET", "", "", ""), ""},
		{"POST from the console", req("POST", self, "same-origin", s.CSRF), ""},
		{"POST without a token", req("POST", self, "same-origin", ""), "lacks the console's CSRF token"},
		{"POST with another token", req("POST", self, "same-origin", wrong), "lacks the console's CSRF token"},
		{"POST without Origin", req("POST", "", "", s.CSRF), "Origin is missing or foreign"},
		{"POST from another origin", req("POST", "https://evil.example", "", s.CSRF), "Origin is missing or foreign"},
		{"POST from http", req("POST", "http://gw.example:8443", "", s.CSRF), "Origin is missing or foreign"},
		{"POST from another port", req("POST", "https://gw.example:9443", "", s.CSRF), "Origin is missing or foreign"},
		{"POST cross-site by fetch metadata", req("POST", self, "cross-site", s.CSRF), "Origin is missing or foreign"},
		{"DELETE without a token", req("DELETE", self, "", ""), "lacks the console's CSRF token"},
	} {
		got := s.CheckRequest(tc.r)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
	}
}

// The embedded assets hold the pages, our modules and xterm.js's
// terminal emulator, and no
// page loads anything from another origin or inline.
func TestAssets(t *testing.T) {
	a := webui.Assets()
	for _, f := range []string{"index.html", "app.css", "js/app.js", "js/api.js", "js/pages.js", "js/player.js", "vendor/xterm-headless.js"} {
		if _, err := fs.Stat(a, f); err != nil {
			t.Errorf("asset %s: %v", f, err)
		}
	}
	err := fs.WalkDir(a, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(p, "vendor/") {
			return err
		}
		b, err := fs.ReadFile(a, p)
		if err != nil {
			return err
		}
		bads := []string{"http://", "https://", "<script>", " style=", "onclick=", "innerHTML", "eval("}
		if strings.HasSuffix(p, ".svg") {
			// Its xmlns is a name, not a load.
			bads = []string{"<script", "href", "url("}
		}
		for _, bad := range bads {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s contains %q: the console loads nothing from elsewhere and nothing inline", p, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
