package apiserver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// caller is an authenticated user of the API.
type caller struct {
	user     store.User
	logins   []string
	admin    bool
	notAfter time.Time
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
		if err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
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
			if _, err := s.Store.AppendAudit(r.Context(), ev); err != nil {
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

// authenticate verifies the client certificate of r against the cluster CA
// at the gateway's clock, then checks its record and its user in the store.
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, unauthenticated("you are not logged in: run tunnel login")
	}
	leaf := r.TLS.PeerCertificates[0]
	now := s.now()
	if now.After(leaf.NotAfter) {
		return nil, unauthenticated(fmt.Sprintf("your certificate expired %s ago: run tunnel login", now.Sub(leaf.NotAfter).Round(time.Second)))
	}
	if now.Before(leaf.NotBefore) {
		return nil, unauthenticated("your certificate is not valid yet: check this machine's clock, then run tunnel login")
	}
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: s.CA.X509Pool(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, unauthenticated("your certificate was not issued by this cluster: run tunnel login against this gateway")
	}
	if len(leaf.URIs) != 1 {
		return nil, unauthenticated("your certificate carries no tunnel identity: run tunnel login")
	}
	id, err := identity.ParseURI(leaf.URIs[0])
	if err != nil || id.Cluster != s.CA.Cluster() || id.Kind != identity.User {
		return nil, unauthenticated("your certificate is not a user certificate of this cluster: run tunnel login")
	}
	rec, err := s.Store.GetCertificate(r.Context(), store.CertX509, certs.X509SerialHex(leaf))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, unauthenticated("this gateway has no record of your certificate: run tunnel login")
	case err != nil:
		return nil, fmt.Errorf("read certificate record: %w", err)
	case !rec.RevokedAt.IsZero():
		return nil, unauthenticated("your certificate was revoked by an administrator")
	}
	u, err := s.Store.GetUser(r.Context(), id.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, unauthenticated("your user no longer exists on this gateway")
	case err != nil:
		return nil, fmt.Errorf("read user: %w", err)
	case u.Locked:
		return nil, &httpError{403, api.CodeForbidden, "your account is locked: ask an administrator"}
	}
	logins, admin, err := s.Login.GrantOf(r.Context(), u)
	if err != nil {
		return nil, err
	}
	return &caller{user: u, logins: logins, admin: admin, notAfter: leaf.NotAfter}, nil
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	writeJSON(w, 200, api.Whoami{User: c.user.Name, Roles: c.user.Roles, Logins: c.logins, Admin: c.admin, NotAfter: c.notAfter})
}
