package webui

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

// The console's session is a cookie the gateway seals with its store's
// key (seal.Sealer, the key every gateway of one store shares, so that any
// of them opens it). It carries the X.509 client certificate that the
// console's login had the gateway issue — the same login as `tunnel
// login`, for a key pair the gateway made and threw away — so that a
// cookie is checked exactly like a certificate (package peer: the record
// of the certificate, not revoked, the user exists and is not locked) on
// every request. That record is the server side of the session: logging
// out revokes it, and so does locking or removing the user, on every
// gateway of the store at once.
const (
	// CookieName has the __Host- prefix: the browser keeps it only if it
	// is Secure, has Path=/ and no Domain, so no other host or path can
	// set or shadow it.
	CookieName = "__Host-tunnel-console"
	// CSRFHeader carries the session's CSRF token on every request that
	// changes something.
	CSRFHeader = "X-Tunnel-CSRF"
	// IdleTimeout ends a session nobody used for this long.
	IdleTimeout = 15 * time.Minute
	// MaxLifetime caps a session whatever its certificate says.
	MaxLifetime = 8 * time.Hour
	// refreshAfter is how stale the cookie's last use may get before an
	// answer carries a fresh one (so that not every answer sets a cookie).
	refreshAfter = time.Minute
	// maxCookieLen bounds what Open reads: a sealed session is about
	// 1.2 kB; browsers keep at most 4 kB per cookie.
	maxCookieLen = 4000
	sealLabel    = "console/session"
)

// Session is what the cookie holds.
type Session struct {
	// Cert is the DER of the session's X.509 client certificate.
	Cert []byte `json:"cert"`
	// CSRF is the token the console sends in CSRFHeader (base64url).
	CSRF string `json:"csrf"`
	// Issued is the login; Seen the last request; End the hard end
	// (MaxLifetime after the login, or the certificate's end if sooner).
	Issued time.Time `json:"issued"`
	Seen   time.Time `json:"seen"`
	End    time.Time `json:"end"`
}

// Errors of Open; their text is for the person at the browser.
var (
	ErrInvalid = errors.New("your console session is not valid: log in again")
	ErrExpired = errors.New("your console session ended: log in again")
	ErrIdle    = errors.New("your console session timed out after 15 minutes without use: log in again")
)

// New is a session for a certificate (DER) valid until certEnd, logged in
// at now. random supplies the CSRF token.
func New(cert []byte, certEnd, now time.Time, random io.Reader) (Session, error) {
	tok := make([]byte, 32)
	if _, err := io.ReadFull(random, tok); err != nil {
		return Session{}, fmt.Errorf("make CSRF token: %w", err)
	}
	end := now.Add(MaxLifetime)
	if certEnd.Before(end) {
		end = certEnd
	}
	return Session{Cert: cert, CSRF: base64.RawURLEncoding.EncodeToString(tok), Issued: now, Seen: now, End: end}, nil
}

// Seal returns the cookie value of s.
func (s Session) Seal(sl seal.Sealer) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode console session: %w", err)
	}
	sealed, err := sl.Seal(b, sealLabel)
	if err != nil {
		return "", fmt.Errorf("seal console session: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

// Open reads a cookie value made by Seal and checks the session's times
// at now: ErrInvalid (altered, foreign key, malformed), ErrExpired or
// ErrIdle.
func Open(sl seal.Sealer, value string, now time.Time) (Session, error) {
	if len(value) > maxCookieLen {
		return Session{}, ErrInvalid
	}
	sealed, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		return Session{}, ErrInvalid
	}
	b, err := sl.Open(sealed, sealLabel)
	if err != nil {
		return Session{}, ErrInvalid
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil || len(s.Cert) == 0 || s.CSRF == "" {
		return Session{}, ErrInvalid
	}
	switch {
	case !now.Before(s.End), !now.Before(s.Issued.Add(MaxLifetime)):
		return Session{}, ErrExpired
	case now.Sub(s.Seen) >= IdleTimeout:
		return Session{}, ErrIdle
	}
	return s, nil
}

// Touch returns s used at now, and whether its cookie should be sent
// again (it was last refreshed more than a minute ago).
func (s Session) Touch(now time.Time) (Session, bool) {
	if now.Sub(s.Seen) < refreshAfter {
		return s, false
	}
	s.Seen = now
	return s, true
}

// Cookie is the Set-Cookie of a session's value: Secure, HttpOnly,
// SameSite=Strict, Path=/ (the console's pages are under /ui/, the API it
// calls under /v1/), kept by the browser until the session's end.
func (s Session) Cookie(value string, now time.Time) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: value, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: max(1, int(s.End.Sub(now).Seconds()))}
}

// ClearCookie tells the browser to drop the session's cookie.
func ClearCookie() *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: "", Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1}
}

// CheckCSRF reports whether token is the session's CSRF token, in
// constant time.
func (s Session) CheckCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// Safe reports whether method changes nothing (no CSRF check needed).
func Safe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}

// SameOrigin reports whether r comes from a page of the gateway itself:
// its Origin header names https://HOST with HOST the request's own Host,
// and Sec-Fetch-Site, when the browser sends it, says same-origin. A
// request without an Origin is refused: every browser sends one with a
// POST made by fetch.
func SameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme != "https" || u.Path != "" || u.User != nil {
		return false
	}
	return u.Host == r.Host
}

// CheckRequest is the check of every console request that changes
// something: from the gateway's own origin and carrying the session's
// token. It returns a sentence for the refusal, or "".
func (s Session) CheckRequest(r *http.Request) string {
	if Safe(r.Method) {
		return ""
	}
	if !SameOrigin(r) {
		return "this request did not come from the gateway's own console page (its Origin is missing or foreign): reload the console and try again"
	}
	if !s.CheckCSRF(r.Header.Get(CSRFHeader)) {
		return "this request lacks the console's CSRF token: reload the console and try again"
	}
	return ""
}
