package apiserver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/gateway/internal/webui"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// caller is an authenticated user of the API.
type caller struct {
	user store.User
	// roles are those that count now, from the caller's address: held,
	// and granted by approved access requests (as a login lists them).
	roles    []string
	logins   []string
	admin    bool
	notAfter time.Time
	// console is the web console's session when the caller came with its
	// cookie instead of a client certificate (console.go); nil otherwise.
	console *webui.Session
}

type callerKey struct{}

func callerFrom(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// user wraps a handler that needs a logged-in user.
func (s *Server) user(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r)
		if c == nil && err == nil {
			err = errors.New("authenticate: no caller and no error")
		}
		if err != nil {
			if errors.Is(err, errConsoleEnded) {
				// The browser should stop sending a cookie that will never
				// work again.
				http.SetCookie(w, webui.ClearCookie())
			}
			s.fail(w, r, err)
			return
		}
		if c.console != nil {
			webui.SetSecurityHeaders(w.Header())
			if touched, send := c.console.Touch(s.now()); send {
				if value, err := touched.Seal(s.Sealer); err == nil {
					http.SetCookie(w, touched.Cookie(value, s.now()))
				} else {
					s.log().Error("refresh console cookie", "user", c.user.Name, "err", err)
				}
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// recordDenial writes a refusal a caller can repeat at will through
// Denials (folded: one event with a count per kind and interval), or
// directly when there is no Denials.
func (s *Server) recordDenial(ctx context.Context, ev audit.Event) error {
	return s.Denials.Write(ctx, func(ctx context.Context, ev audit.Event) error {
		_, err := s.Store.AppendAudit(ctx, ev)
		return err
	}, ev)
}

// admin wraps a handler that needs a user holding an admin role. A refusal
// is an audit event.
func (s *Server) admin(h http.HandlerFunc) http.Handler {
	return s.user(func(w http.ResponseWriter, r *http.Request) {
		c := callerFrom(r.Context())
		if !c.admin {
			ev := audit.Event{Time: s.now(), Type: audit.AdminDenied, Actor: c.user.Name,
				Outcome: audit.Failure, Reason: "no admin role", SourceIP: remoteAddr(r).String(),
				Details: map[string]string{"request": r.Method + " " + r.URL.Path}}
			if err := s.recordDenial(r.Context(), ev); err != nil {
				s.fail(w, r, fmt.Errorf("record admin denial: %w", err))
				return
			}
			s.fail(w, r, &httpError{403, api.CodeForbidden, "this needs an admin role, and your roles have none"})
			return
		}
		h(w, r)
	})
}

func unauthenticated(msg string) error { return &httpError{401, api.CodeUnauthenticated, msg} }

// authenticate verifies the client certificate of r (package peer: chain
// at the gateway's clock, identity, record, user) and returns the caller.
// A request without a client certificate may carry the web console's
// cookie instead: the certificate sealed in it is verified the same way
// (consoleChain), after the console's own checks (session times, and for
// a request that changes something its Origin and CSRF token).
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	chain := peerChain(r)
	var console *webui.Session
	if len(chain) == 0 {
		var err error
		if console, chain, err = s.consoleChain(r); err != nil {
			return nil, err
		}
	}
	p, err := peer.Verify(r.Context(), s.Store, s.CA, chain, s.now(), identity.User)
	if err != nil {
		var pe *peer.Error
		switch {
		case !errors.As(err, &pe):
			return nil, err
		case pe.Internal != nil:
			return nil, fmt.Errorf("verify client certificate: %w", pe.Internal)
		case pe.Locked:
			return nil, &httpError{403, api.CodeForbidden, pe.Message}
		case console != nil && strings.Contains(pe.Message, "revoked"):
			// Logout revokes the session's certificate, and so does a
			// lock (even once lifted).
			return nil, consoleEnded("logged out, or revoked by an administrator")
		case console != nil:
			// The user removed, the record gone, the certificate expired.
			return nil, consoleEnded(pe.Message)
		}
		return nil, unauthenticated(pe.Message)
	}
	// Roles limited to source networks count only from inside them, for
	// the API as for logins and sessions.
	roles, logins, admin, err := s.Login.GrantOfFrom(r.Context(), *p.User, remoteAddr(r))
	if err != nil {
		return nil, err
	}
	return &caller{user: *p.User, roles: roles, logins: logins, admin: admin, notAfter: p.NotAfter, console: console}, nil
}

// errConsoleEnded marks the refusals of a console cookie that can never
// work again.
var errConsoleEnded = errors.New("console session ended")

type consoleEndedError struct{ *httpError }

func (e consoleEndedError) Unwrap() []error { return []error{e.httpError, errConsoleEnded} }

func consoleEnded(msg string) error {
	return consoleEndedError{&httpError{401, api.CodeUnauthenticated, "your console session ended (" + msg + "): log in again"}}
}

// consoleChain reads the console's cookie of r, if any: it returns the
// session and the certificate it carries as a chain for peer.Verify. No
// cookie gives no session and no chain (peer.Verify then says "not logged
// in"). A request that changes something must come from the console's
// own page with the session's CSRF token. The one endpoint a cookie does
// not open is the creation of bastion sessions.
func (s *Server) consoleChain(r *http.Request) (*webui.Session, []*x509.Certificate, error) {
	ck, err := r.Cookie(webui.CookieName)
	if err != nil || ck.Value == "" {
		return nil, nil, nil
	}
	sess, err := webui.Open(s.Sealer, ck.Value, s.now())
	if err != nil {
		return nil, nil, consoleEndedError{&httpError{401, api.CodeUnauthenticated, err.Error()}}
	}
	if msg := sess.CheckRequest(r); msg != "" {
		return nil, nil, &httpError{403, api.CodeForbidden, msg}
	}
	if r.URL.Path == api.PathSessions {
		// A bastion session hands out an SSH certificate for a key the
		// caller names: a browser's cookie is not to turn into SSH access.
		return nil, nil, &httpError{403, api.CodeForbidden, "the web console cannot open bastion sessions: use tunnel ssh"}
	}
	cert, err := x509.ParseCertificate(sess.Cert)
	if err != nil {
		return nil, nil, consoleEndedError{&httpError{401, api.CodeUnauthenticated, webui.ErrInvalid.Error()}}
	}
	return &sess, []*x509.Certificate{cert}, nil
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	roles := c.roles
	if roles == nil {
		roles = []string{}
	}
	writeJSON(w, 200, api.Whoami{User: c.user.Name, Roles: roles, Logins: c.logins, Admin: c.admin, NotAfter: c.notAfter})
}
