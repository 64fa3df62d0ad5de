package apiserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/webui"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The web console (package webui) is served under /ui/ on the API's TLS
// listener. Its login is the same login as `tunnel login` (login.Service:
// lockout, replay guard, audit) for a key pair made here and thrown away;
// the X.509 certificate it issues goes, sealed, into the console's cookie,
// and authenticate (caller.go) checks that certificate like one presented
// in the TLS handshake. So a console caller is the same kind of caller as
// a certificate caller, decided in the same place, and the certificate's
// record in the store is the session's server side: logout revokes it, and
// locking or removing the user ends it on every gateway of the store.
const (
	pathConsole        = "/ui/"
	pathConsoleLogin   = "/ui/api/login"
	pathConsoleLogout  = "/ui/api/logout"
	pathConsoleSession = "/ui/api/session"
)

// consoleLogin is the body of POST /ui/api/login.
type consoleLogin struct {
	User     string `json:"user"`
	Password string `json:"password"`
	OTP      string `json:"otp"`
}

// consoleSession answers POST /ui/api/login and GET /ui/api/session: who
// is logged in, and the CSRF token the page must send with every change.
type consoleSession struct {
	User    string    `json:"user"`
	Roles   []string  `json:"roles"`
	Admin   bool      `json:"admin"`
	CSRF    string    `json:"csrf"`
	Ends    time.Time `json:"ends"`
	IdleEnd string    `json:"idle_timeout"`
}

// routeConsole adds the console's pages and its login, logout and session
// endpoints.
func (s *Server) routeConsole(mux *http.ServeMux) {
	fileServer := http.StripPrefix("/ui", http.FileServerFS(webui.Assets()))
	files := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != pathConsole {
			// No directory listings: the console's files are its pages.
			s.fail(w, r, notFound("no such console page: "+r.URL.Path))
			return
		}
		fileServer.ServeHTTP(w, r)
	})
	mux.Handle("GET "+pathConsole, consoleHeaders(files))
	mux.Handle("GET /ui", consoleHeaders(http.RedirectHandler(pathConsole, http.StatusMovedPermanently)))
	mux.Handle("POST "+pathConsoleLogin, consoleHeaders(http.HandlerFunc(s.handleConsoleLogin)))
	mux.Handle("POST "+pathConsoleLogout, s.user(s.handleConsoleLogout))
	mux.Handle("GET "+pathConsoleSession, s.user(s.handleConsoleSession))
}

// consoleHeaders sets the console's security headers (webui.CSP and the
// rest) on every answer of next.
func consoleHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		webui.SetSecurityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// handleConsoleLogin logs a user in with password and code, through
// login.Service like POST /v1/login, and answers with the session cookie.
func (s *Server) handleConsoleLogin(w http.ResponseWriter, r *http.Request) {
	if !webui.SameOrigin(r) {
		s.fail(w, r, &httpError{403, api.CodeForbidden, "a console login must come from the gateway's own console page: open /ui/ on this gateway"})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.fail(w, r, badRequest("a console login is a JSON body (Content-Type: application/json)"))
		return
	}
	var in consoleLogin
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	csr, sshKey, err := throwawayKeys()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := s.Login.Login(r.Context(), api.LoginRequest{User: in.User, Password: in.Password, OTP: in.OTP,
		CSR: csr, SSHPublicKey: sshKey}, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	block, _ := pem.Decode([]byte(resp.X509Certificate))
	if block == nil {
		s.fail(w, r, errors.New("console login: the login answered no certificate"))
		return
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		s.fail(w, r, fmt.Errorf("console login: parse the issued certificate: %w", err))
		return
	}
	now := s.now()
	sess, err := webui.New(block.Bytes, cert.NotAfter, now, rand.Reader)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	value, err := sess.Seal(s.Sealer)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.Store.GetUser(r.Context(), resp.User)
	if err != nil {
		s.fail(w, r, fmt.Errorf("console login: read user: %w", err))
		return
	}
	_, _, admin, err := s.Login.GrantOfFrom(r.Context(), u, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, sess.Cookie(value, now))
	writeJSON(w, 200, consoleSession{User: u.Name, Roles: u.Roles, Admin: admin, CSRF: sess.CSRF, Ends: sess.End,
		IdleEnd: webui.IdleTimeout.String()})
}

// throwawayKeys makes a key pair for a console login's certificates (the
// login flow needs a CSR and an SSH key): its private key is dropped at
// once, so the certificates issued for it serve only as the console
// session's record.
func throwawayKeys() (csrPEM, sshKey string, err error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("console login: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, priv)
	if err != nil {
		return "", "", fmt.Errorf("console login: create certificate request: %w", err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return "", "", fmt.Errorf("console login: ssh key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), nil
}

// handleConsoleSession tells the page who is logged in, and its CSRF
// token (the page keeps it in memory only, so a reload asks again).
func (s *Server) handleConsoleSession(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	if c.console == nil {
		s.fail(w, r, badRequest("this endpoint is the web console's: use tunnel whoami"))
		return
	}
	writeJSON(w, 200, consoleSession{User: c.user.Name, Roles: c.user.Roles, Admin: c.admin, CSRF: c.console.CSRF,
		Ends: c.console.End, IdleEnd: webui.IdleTimeout.String()})
}

// handleConsoleLogout revokes the session's certificate, which ends the
// session on every gateway of the store, and clears the cookie.
func (s *Server) handleConsoleLogout(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	if c.console == nil {
		s.fail(w, r, badRequest("this endpoint is the web console's: a certificate login ends with its certificate"))
		return
	}
	now := s.now()
	cert, err := x509.ParseCertificate(c.console.Cert)
	if err != nil {
		s.fail(w, r, fmt.Errorf("console logout: %w", err))
		return
	}
	serial := certs.X509SerialHex(cert)
	ev := audit.Event{Time: now, Type: audit.CertRevoked, Actor: c.user.Name, Subject: serial, Outcome: audit.Success,
		Reason: "logged out of the web console", SourceIP: remoteAddr(r).String()}
	_, err = s.Store.RevokeCertificates(r.Context(), store.RevokeFilter{Subject: c.user.Name, SubjectKind: identity.User,
		Serial: serial, Kind: store.CertX509}, now, ev)
	if err != nil {
		s.fail(w, r, fmt.Errorf("console logout: revoke the session's certificate: %w", err))
		return
	}
	http.SetCookie(w, webui.ClearCookie())
	writeJSON(w, 200, struct {
		LoggedOut bool `json:"logged_out"`
	}{true})
}
