package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/peer"
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
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	p, err := peer.Verify(r.Context(), s.Store, s.CA, peerChain(r), s.now(), identity.User)
	if err != nil {
		var pe *peer.Error
		switch {
		case !errors.As(err, &pe):
			return nil, err
		case pe.Internal != nil:
			return nil, fmt.Errorf("verify client certificate: %w", pe.Internal)
		case pe.Locked:
			return nil, &httpError{403, api.CodeForbidden, pe.Message}
		}
		return nil, unauthenticated(pe.Message)
	}
	logins, admin, err := s.Login.GrantOf(r.Context(), *p.User)
	if err != nil {
		return nil, err
	}
	return &caller{user: *p.User, logins: logins, admin: admin, notAfter: p.NotAfter}, nil
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	writeJSON(w, 200, api.Whoami{User: c.user.Name, Roles: c.user.Roles, Logins: c.logins, Admin: c.admin, NotAfter: c.notAfter})
}
