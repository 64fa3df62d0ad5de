package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// adminEvent is the audit event of an admin change made by the caller.
func (s *Server) adminEvent(r *http.Request, t audit.Type, subject string) audit.Event {
	return audit.Event{Time: s.now(), Type: t, Actor: callerFrom(r.Context()).user.Name,
		Subject: subject, Outcome: audit.Success, SourceIP: remoteAddr(r).String()}
}

// storeError turns store sentinels into answers for the caller.
func storeError(err error, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound(fmt.Sprintf("%s: %s", what, unwrapMessage(err)))
	case errors.Is(err, store.ErrExists):
		return conflict(fmt.Sprintf("%s: %s", what, unwrapMessage(err)))
	}
	return err
}

// unwrapMessage keeps the store's explanation but drops its operation
// prefix when there is one ("delete role dev: still held by user bob:
// already exists" becomes "still held by user bob"). Only the bare
// sentinel's words are kept when the store gives no explanation.
func unwrapMessage(err error) string {
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, ": "); ok && rest != "" {
		msg = rest
	}
	for _, sentinel := range []error{store.ErrNotFound, store.ErrExists} {
		if m, ok := strings.CutSuffix(msg, ": "+sentinel.Error()); ok && m != "" {
			return m
		}
	}
	return msg
}

func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	users, err := s.Store.ListUsers(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	out := make([]api.User, 0, len(users))
	for _, u := range users {
		au := api.User{Name: u.Name, Roles: u.Roles, Locked: u.Locked, CreatedAt: u.CreatedAt}
		if au.Roles == nil {
			au.Roles = []string{}
		}
		if f, err := s.Store.LoginFailures(r.Context(), u.Name); err == nil && f.LockedUntil.After(now) {
			t := f.LockedUntil
			au.LockedOutUntil = &t
		}
		out = append(out, au)
	}
	writeJSON(w, 200, out)
}

func (s *Server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.CreateUserRequest
	if err := api.Decode(r.Body, &req); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	roles := make([]string, 0, len(req.Roles))
	for _, rn := range req.Roles {
		rn = identity.CanonicalName(rn)
		if err := identity.ValidateName("role", rn); err != nil {
			s.fail(w, r, badRequest(err.Error()))
			return
		}
		if _, err := s.Store.GetRole(r.Context(), rn); errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, badRequest(fmt.Sprintf("role %q does not exist: create it first with tunnel admin roles add %s", rn, rn)))
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
		roles = append(roles, rn)
	}
	u, enr, err := login.NewUser(r.Context(), s.Hasher, s.Sealer, s.TOTPIssuer, req.Name, req.Password, roles, s.now())
	if err != nil {
		if errors.Is(err, identity.ErrInvalidName) || strings.Contains(err.Error(), "password") {
			s.fail(w, r, badRequest(err.Error()))
			return
		}
		s.fail(w, r, err)
		return
	}
	ev := s.adminEvent(r, audit.UserCreated, u.Name)
	ev.Details = map[string]string{"roles": strings.Join(roles, ",")}
	if err := s.Store.CreateUser(r.Context(), u, ev); err != nil {
		s.fail(w, r, storeError(err, "create user "+u.Name))
		return
	}
	writeJSON(w, http.StatusCreated, enr)
}

// target reads the {name} path value and refuses an action on oneself.
func (s *Server) target(r *http.Request, verb string) (string, error) {
	name := identity.CanonicalName(r.PathValue("name"))
	if err := identity.ValidateName("user", name); err != nil {
		return "", badRequest(err.Error())
	}
	if name == callerFrom(r.Context()).user.Name && verb != "" {
		return "", badRequest(fmt.Sprintf("you cannot %s your own account; ask another admin", verb))
	}
	return name, nil
}

func (s *Server) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	name, err := s.target(r, "remove")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.Store.GetUser(r.Context(), name); err != nil {
		s.fail(w, r, storeError(err, "remove user "+name))
		return
	}
	if s.Sessions != nil {
		// A removed user's live access dies with the account.
		if err := s.Sessions.RevokeUser(r.Context(), name, callerFrom(r.Context()).user.Name); err != nil {
			s.fail(w, r, fmt.Errorf("revoke the live access of %s before removing them: %w", name, err))
			return
		}
	}
	if err := s.Store.DeleteUser(r.Context(), name, s.adminEvent(r, audit.UserDeleted, name)); err != nil {
		s.fail(w, r, storeError(err, "remove user "+name))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleLockUser(lock bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		verb, t := "unlock", audit.UserUnlocked
		if lock {
			verb, t = "lock", audit.UserLocked
		}
		// An admin may unlock their own account: being signed in, they are
		// not locked by an administrator, so this only lifts a lockout
		// after failed logins, which anyone can set off with five wrong
		// passwords (and which could otherwise keep the only admin out).
		refuseSelf := verb
		if !lock {
			refuseSelf = ""
		}
		name, err := s.target(r, refuseSelf)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if err := s.Store.SetUserLocked(r.Context(), name, lock, s.adminEvent(r, t, name)); err != nil {
			s.fail(w, r, storeError(err, verb+" user "+name))
			return
		}
		if lock && s.Sessions != nil {
			// Live access dies now, not at the next login.
			if err := s.Sessions.RevokeUser(r.Context(), name, callerFrom(r.Context()).user.Name); err != nil {
				s.fail(w, r, fmt.Errorf("user %s is locked, but revoking their live access failed: %w", name, err))
				return
			}
		}
		if !lock {
			// Unlocking also lifts a lockout after failed logins.
			if err := s.Store.ClearLoginFailures(r.Context(), name); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) handleResetMFA(w http.ResponseWriter, r *http.Request) {
	name, err := s.target(r, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	u := store.User{Name: name}
	enr, err := login.NewTOTP(s.Sealer, s.TOTPIssuer, &u)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Store.ResetMFA(r.Context(), name, u.TOTPSecret, s.adminEvent(r, audit.UserMFAReset, name)); err != nil {
		s.fail(w, r, storeError(err, "reset MFA of "+name))
		return
	}
	writeJSON(w, 200, enr)
}

// handleChangeUserRoles grants a user roles and takes others away. The
// user's next login gets the new roles; certificates already issued keep
// what they were issued with until they expire. An admin may change their
// own roles, but not so that none of them grants the admin API any more.
func (s *Server) handleChangeUserRoles(w http.ResponseWriter, r *http.Request) {
	name, err := s.target(r, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in api.UserRolesChange
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	if len(in.Grant) == 0 && len(in.Revoke) == 0 {
		s.fail(w, r, badRequest("nothing to change: name at least one role to grant or to revoke"))
		return
	}
	grant, err := s.existingRoles(r, in.Grant)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	revoke, err := s.existingRoles(r, in.Revoke)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, rn := range grant {
		if slices.Contains(revoke, rn) {
			s.fail(w, r, badRequest(fmt.Sprintf("role %s is both granted and revoked: name it once", rn)))
			return
		}
	}
	u, err := s.Store.GetUser(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, notFound(fmt.Sprintf("there is no user %s (tunnel admin users ls lists them)", name)))
		return
	} else if err != nil {
		s.fail(w, r, storeError(err, "change the roles of "+name))
		return
	}
	// Live sessions and streams the user's roles no longer allow end now.
	if err := s.policyChanged(r, "the roles of "+name+" were changed"); err != nil {
		s.fail(w, r, err)
		return
	}
	var granted, revoked []string
	roles := slices.Clone(u.Roles)
	for _, rn := range grant {
		if !slices.Contains(roles, rn) {
			roles, granted = append(roles, rn), append(granted, rn)
		}
	}
	roles = slices.DeleteFunc(roles, func(rn string) bool {
		if slices.Contains(revoke, rn) {
			revoked = append(revoked, rn)
			return true
		}
		return false
	})
	slices.Sort(roles)
	if name == callerFrom(r.Context()).user.Name {
		admin, err := s.anyAdmin(r.Context(), roles)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !admin {
			s.fail(w, r, badRequest("this would leave you no role that grants the admin API: ask another admin"))
			return
		}
	}
	ev := s.adminEvent(r, audit.UserRolesChanged, name)
	ev.Details = map[string]string{"granted": strings.Join(granted, ","), "revoked": strings.Join(revoked, ","),
		"roles": strings.Join(roles, ",")}
	if err := s.Store.SetUserRoles(r.Context(), name, roles, ev); err != nil {
		s.fail(w, r, storeError(err, "change the roles of "+name))
		return
	}
	// Live sessions and streams the user's roles no longer allow end now.
	if err := s.policyChanged(r, "the roles of "+name+" were changed"); err != nil {
		s.fail(w, r, err)
		return
	}
	out := api.User{Name: u.Name, Roles: roles, Locked: u.Locked, CreatedAt: u.CreatedAt}
	if out.Roles == nil {
		out.Roles = []string{}
	}
	writeJSON(w, http.StatusOK, out)
}

// existingRoles canonicalises role names and checks that each exists.
func (s *Server) existingRoles(r *http.Request, names []string) ([]string, error) {
	var out []string
	for _, rn := range names {
		rn = identity.CanonicalName(rn)
		if err := identity.ValidateName("role", rn); err != nil {
			return nil, badRequest(err.Error())
		}
		if _, err := s.Store.GetRole(r.Context(), rn); errors.Is(err, store.ErrNotFound) {
			return nil, badRequest(fmt.Sprintf("role %q does not exist: see tunnel admin roles ls", rn))
		} else if err != nil {
			return nil, err
		}
		if !slices.Contains(out, rn) {
			out = append(out, rn)
		}
	}
	return out, nil
}
