// Package apiserver serves the gateway's HTTPS API (paths and bodies in
// pkg/api): the public CA bundle, login, whoami, and the admin API for
// users, roles, join tokens, agents, policy and the audit log; for agents,
// enrolment with a join token and certificate renewal; for every user, the
// nodes they may reach.
//
// Build a [Server] and mount [Server.Handler] on a TLS listener configured
// with trust.ServerConfig. Every endpoint verifies the caller's client
// certificate itself (see caller.go) so that refusals carry a message a
// person can act on. Anonymous callers are rate-limited per source address
// before any work (guard.go): every request to the anonymous endpoints
// (ping, CA bundle, login, enrolment), and every request to the others
// that does not carry a certificate of the cluster CA. Their refusals are
// audited through an auditlog.Folder, so that repeats cost one event per
// minute. A panic in a handler is answered as an internal error and
// counted; the process goes on.
package apiserver

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
)

// Server holds what the handlers need. Fields are set once before Handler
// is called.
type Server struct {
	Store  store.Store
	CA     *certs.Authority
	Sealer seal.Sealer
	// NewCAKey makes the key of a CA rotation's start where the cluster
	// keeps its CA keys (a new Transit key in Vault); nil means a local
	// key sealed with Sealer. A cluster whose keys are in Vault refuses a
	// rotation without it.
	NewCAKey func(ctx context.Context, kind store.CertKind) (crypto.Signer, error)
	Hasher   *auth.Hasher
	Login    *login.Service
	Limiter  *auth.IPLimiter // for anonymous callers; nil means no limit
	// Denials records refusals of anonymous callers (enrolment, renewal),
	// folding repeats; nil means one event each, written directly.
	Denials *auditlog.Folder
	Version string
	Clock   func() time.Time // nil means time.Now
	Log     *slog.Logger     // nil means discard
	// TOTPIssuer is the issuer shown by authenticator apps.
	TOTPIssuer string

	// Presence reports the agents connected now (the relay implements
	// it); nil means every agent is shown offline.
	Presence Presence
	// PolicyChanged is called after every policy rule added or removed,
	// so that the relay reloads its rules; nil means nobody to tell.
	PolicyChanged func(ctx context.Context) error
	// NetworkChanged is called after every network rule added or removed,
	// so that this gateway's listeners apply the rules at once; nil means
	// nobody to tell.
	NetworkChanged func(ctx context.Context) error
	// waits ends the long polls of the audit log (audit.go) when the
	// server shuts down (StopWaits).
	waits waitStop
	// AgentTTL is the lifetime of agent certificates (X.509 and SSH
	// host); zero means certs.DefaultMachineTTL (24 h). It may not exceed
	// certs.MaxMachineTTL.
	AgentTTL time.Duration
	// Sessions grants and revokes bastion sessions and live access; nil
	// means no sessions (and locks only refuse new logins).
	Sessions *sessions.Manager

	krl krlCache // the KRL endpoint's last answer (krl.go)
}

// Presence reports connected agents: by name, with Online set, Since and
// the services they expose.
type Presence interface {
	Online() map[string]api.Agent
}

func (s *Server) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock()
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathPing, s.handlePing)
	mux.HandleFunc("GET "+api.PathCA, s.handleCA)
	mux.HandleFunc("POST "+api.PathLogin, s.handleLogin)
	mux.Handle("GET "+api.PathWhoami, s.user(s.handleWhoami))

	mux.Handle("GET "+api.PathUsers, s.admin(s.handleListUsers))
	mux.Handle("POST "+api.PathUsers, s.admin(s.handleCreateUser))
	mux.Handle("DELETE "+api.PathUsers+"/{name}", s.admin(s.handleDeleteUser))
	mux.Handle("POST "+api.PathUsers+"/{name}/lock", s.admin(s.handleLockUser(true)))
	mux.Handle("POST "+api.PathUsers+"/{name}/unlock", s.admin(s.handleLockUser(false)))
	mux.Handle("POST "+api.PathUsers+"/{name}/reset-mfa", s.admin(s.handleResetMFA))
	mux.Handle("POST "+api.PathUsers+"/{name}/roles", s.admin(s.handleChangeUserRoles))

	mux.Handle("GET "+api.PathRoles, s.admin(s.handleListRoles))
	mux.Handle("POST "+api.PathRoles, s.admin(s.handleCreateRole))
	mux.Handle("DELETE "+api.PathRoles+"/{name}", s.admin(s.handleDeleteRole))
	mux.Handle("PATCH "+api.PathRoles+"/{name}", s.admin(s.handleUpdateRole))

	mux.Handle("GET "+api.PathAudit, s.admin(s.handleListAudit))
	mux.Handle("GET "+api.PathAuditVerify, s.admin(s.handleVerifyAudit))

	mux.Handle("POST "+api.PathTokens, s.admin(s.handleCreateToken))
	mux.Handle("GET "+api.PathAgents, s.admin(s.handleListAgents))
	mux.Handle("POST "+api.PathAgents+"/{name}/lock", s.admin(s.handleLockAgent(true)))
	mux.Handle("POST "+api.PathAgents+"/{name}/unlock", s.admin(s.handleLockAgent(false)))
	mux.Handle("GET "+api.PathPolicy, s.admin(s.handleListPolicy))
	mux.Handle("POST "+api.PathPolicy, s.admin(s.handleAddPolicy))
	mux.Handle("DELETE "+api.PathPolicy+"/{id}", s.admin(s.handleDeletePolicy))

	mux.HandleFunc("POST "+api.PathEnroll, s.handleEnroll)
	mux.HandleFunc("POST "+api.PathRenew, s.handleRenew)
	mux.Handle("GET "+api.PathNodes, s.user(s.handleListNodes))

	mux.Handle("POST "+api.PathSessions, s.user(s.handleCreateSession))
	mux.Handle("GET "+api.PathAdminGateways, s.admin(s.handleListGateways))
	mux.Handle("GET "+api.PathAdminSessions, s.admin(s.handleListSessions))
	mux.Handle("POST "+api.PathAdminSessions+"/{id}/revoke", s.admin(s.handleRevokeSession))
	mux.Handle("GET "+api.PathAdminSessions+"/{id}/recording", s.admin(s.handleGetRecording))
	mux.HandleFunc("POST "+api.PathRecordings+"/{id}", s.handleUploadRecording)
	s.routeKRL(mux)
	s.routeNetwork(mux)
	s.routeRequests(mux)
	s.routeCARotation(mux)
	s.routeConsole(mux)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Error{Code: api.CodeNotFound, Message: "no such API endpoint: " + r.Method + " " + r.URL.Path + " (is your tunnel client newer than the gateway?)"}, http.StatusNotFound)
	})
	return s.recoverPanics(noteStore(s.logRequests(s.limitAnonymous(mux))))
}

// logRequests logs method, path, status and duration; never bodies.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		next.ServeHTTP(sw, r)
		s.log().Debug("api request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"remote", remoteAddr(r).String(), "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *api.Error, status int) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, status, e)
}

// fail answers an error: a *login.Error or *httpError keeps its status and
// message; anything else is logged and answered as an internal error. The
// one exception is the store: when it could not be reached — err says so,
// or a store call of this request noted it (store.NoteUnavailable) and the
// answer would be a server error however the handler wrapped it — the
// answer is 503 "the gateway cannot reach its store", so that clients
// fail over to another gateway or try again. The cause (which may name the
// database host) goes to the log, not to the caller.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var le *login.Error
	var he *httpError
	switch {
	case errors.Is(err, store.ErrUnavailable):
		s.storeUnavailable(w, r, err)
	case errors.Is(err, vaultkeys.ErrUnreachable), errors.Is(err, vaultkeys.ErrSealed), errors.Is(err, vaultkeys.ErrToken):
		// The key backend: its sentence says which and what to do.
		var ve *vaultkeys.Error
		msg := "the gateway cannot use Vault right now"
		if errors.As(err, &ve) {
			msg = ve.Error()
		}
		s.log().Error("vault unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, &api.Error{Code: api.CodeStoreUnavailable, RetryAfter: 5, Message: msg + "; nothing was changed"}, http.StatusServiceUnavailable)
	case errors.As(err, &le):
		if le.Status >= 500 {
			if cause := unavailableNote(r); cause != nil {
				s.storeUnavailable(w, r, cause)
				return
			}
			s.log().Error("login failed", "err", err)
		}
		writeError(w, &api.Error{Code: le.Code, Message: le.Message, RetryAfter: int(le.RetryAfter.Seconds())}, le.Status)
	case errors.As(err, &he):
		writeError(w, &api.Error{Code: he.code, Message: he.msg}, he.status)
	case errors.Is(err, context.Canceled):
		// The client went away; nothing to answer.
	default:
		if cause := unavailableNote(r); cause != nil {
			s.storeUnavailable(w, r, fmt.Errorf("%w (noted by the store as: %w)", err, cause))
			return
		}
		s.log().Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, &api.Error{Code: api.CodeInternal, Message: "the gateway hit an internal error; nothing was changed (see the gateway log)"}, http.StatusInternalServerError)
	}
}

// storeUnavailable answers 503: whatever asked (a login included), the
// request may be fine; the gateway's database is not reachable now.
func (s *Server) storeUnavailable(w http.ResponseWriter, r *http.Request, cause error) {
	s.log().Error("store unavailable", "method", r.Method, "path", r.URL.Path, "err", cause)
	writeError(w, &api.Error{Code: api.CodeStoreUnavailable, RetryAfter: 5,
		Message: store.UnavailableMessage + " (the gateway log says why)"}, http.StatusServiceUnavailable)
}

// noteStore puts a store.UnavailableNote in every request's context, read
// back by fail (unavailableNote).
func noteStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, _ := store.WithUnavailableNote(r.Context())
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// unavailableNote is the store's unreachability noted during r, or nil.
func unavailableNote(r *http.Request) error {
	return store.UnavailableNoted(r.Context())
}

// httpError is an error with a status and a message for the caller.
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error { return &httpError{400, api.CodeBadRequest, msg} }
func notFound(msg string) error   { return &httpError{404, api.CodeNotFound, msg} }
func conflict(msg string) error   { return &httpError{409, api.CodeConflict, msg} }

func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, api.Ping{Cluster: s.CA.Cluster(), Version: s.Version})
}

func (s *Server) handleCA(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, login.CABundle(s.CA))
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req api.LoginRequest
	if err := api.Decode(r.Body, &req); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	resp, err := s.Login.Login(r.Context(), req, remoteAddr(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, resp)
}
