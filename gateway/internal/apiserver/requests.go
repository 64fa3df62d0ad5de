package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Just-in-time access requests: every logged-in user may ask; the access
// home (access.Decider) says who may decide, revoke and see what. Every
// step, refusals included, is an audit event.

// maxRequestText bounds a reason or a comment.
const maxRequestText = 500

// watchingWaits bounds the long polls (GET .../wait) that follow the
// store's changes at once.
var watchingWaits = make(chan struct{}, maxWatchingWaits)

const maxWatchingWaits = 256

func (s *Server) routeRequests(mux *http.ServeMux) {
	mux.Handle("POST "+api.PathRequests, s.user(s.handleCreateRequest))
	mux.Handle("GET "+api.PathRequests, s.user(s.handleListRequests))
	mux.Handle("GET "+api.PathRequests+"/{id}", s.user(s.handleGetRequest))
	mux.Handle("GET "+api.PathRequests+"/{id}/wait", s.user(s.handleWaitRequest))
	mux.Handle("POST "+api.PathRequests+"/{id}/approve", s.user(s.handleDecideRequest(store.RequestApproved)))
	mux.Handle("POST "+api.PathRequests+"/{id}/deny", s.user(s.handleDecideRequest(store.RequestDenied)))
	mux.Handle("POST "+api.PathRequests+"/{id}/revoke", s.user(s.handleRevokeRequest))
}

func (s *Server) decider() *access.Decider { return s.Login.Decider() }

func newRequestID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "req-" + hex.EncodeToString(b), nil
}

func checkText(what, v string, required bool) (string, error) {
	v = strings.TrimSpace(v)
	switch {
	case required && v == "":
		return "", badRequest(fmt.Sprintf("a %s is required", what))
	case utf8.RuneCountInString(v) > maxRequestText:
		return "", badRequest(fmt.Sprintf("the %s is longer than %d characters", what, maxRequestText))
	case !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", badRequest(fmt.Sprintf("the %s holds control characters", what))
	}
	return v, nil
}

// refuseRequest records a refused step (request.refused) and answers it.
func (s *Server) refuseRequest(w http.ResponseWriter, r *http.Request, subject string, err error) {
	var ref *access.Refusal
	if !errors.As(err, &ref) {
		s.fail(w, r, err)
		return
	}
	ev := s.adminEvent(r, audit.RequestRefused, subject)
	ev.Outcome, ev.Reason = audit.Failure, ref.Msg
	ev.Details = map[string]string{"request": r.Method + " " + r.URL.Path}
	if err := s.recordDenial(r.Context(), ev); err != nil {
		s.fail(w, r, fmt.Errorf("record request refusal: %w", err))
		return
	}
	s.fail(w, r, &httpError{403, api.CodeForbidden, ref.Msg})
}

func (s *Server) handleCreateRequest(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var in api.CreateAccessRequest
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	roleName := identity.CanonicalName(in.Role)
	if err := identity.ValidateName("role", roleName); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	reason, err := checkText("reason", in.Reason, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	dur := time.Duration(in.Duration)
	if _, err := s.decider().CheckRequest(r.Context(), c.user, roleName, dur); err != nil {
		s.refuseRequest(w, r, roleName, err)
		return
	}
	now := s.now()
	for range 3 {
		id, err := newRequestID()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		req := store.AccessRequest{ID: id, User: c.user.Name, Role: roleName, Reason: reason, Duration: dur,
			State: store.RequestPending, CreatedAt: now, PendingUntil: now.Add(access.PendingTTL)}
		ev := s.adminEvent(r, audit.RequestCreated, id)
		ev.Reason = reason
		ev.Details = map[string]string{"user": req.User, "role": roleName, "duration": dur.String()}
		err = s.Store.CreateRequest(r.Context(), req, ev)
		if errors.Is(err, store.ErrExists) {
			continue // an ID drawn twice: draw again
		}
		if err != nil {
			s.fail(w, r, storeError(err, "create request"))
			return
		}
		s.log().Info("access request created", "request", id, "user", req.User, "role", roleName, "duration", dur)
		writeJSON(w, http.StatusCreated, s.requestOut(r.Context(), c, req))
		return
	}
	s.fail(w, r, errors.New("create request: no free request ID after 3 draws"))
}

// requestOut is r as c sees it.
func (s *Server) requestOut(ctx context.Context, c *caller, r store.AccessRequest) api.AccessRequest {
	a, err := s.decider().Approver(ctx, c.user, c.admin)
	if err != nil {
		s.log().Warn("read what a user may do with requests", "user", c.user.Name, "err", err)
	}
	return requestAs(a, r)
}

// requestAs is r as the approver a sees it.
func requestAs(a access.Approver, r store.AccessRequest) api.AccessRequest {
	out := api.AccessRequest{ID: r.ID, User: r.User, Role: r.Role, Reason: r.Reason, Duration: api.Duration(r.Duration),
		State: string(r.State), CreatedAt: r.CreatedAt, PendingUntil: r.PendingUntil, DecidedAt: r.DecidedAt,
		DecidedBy: r.DecidedBy, Comment: r.Comment, Start: r.Start, End: r.End, EndedAt: r.EndedAt,
		EndedBy: r.EndedBy, EndReason: r.EndReason}
	out.CanDecide = a.CanDecide(r) == nil
	out.CanRevoke = a.CanRevoke(r) == nil
	return out
}

func (s *Server) handleListRequests(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	q := r.URL.Query()
	all := q.Get(api.RequestsQueryAll) == "1" || q.Get(api.RequestsQueryAll) == "true"
	f := store.RequestFilter{Limit: 1000}
	if st := q.Get(api.RequestsQueryState); st != "" {
		switch store.RequestState(st) {
		case store.RequestPending, store.RequestApproved, store.RequestDenied, store.RequestExpired, store.RequestRevoked:
			f.States = []store.RequestState{store.RequestState(st)}
		default:
			s.fail(w, r, badRequest(fmt.Sprintf("unknown state %q: use pending, approved, denied, expired or revoked", st)))
			return
		}
	}
	list, err := s.Store.ListRequests(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ap, err := s.decider().Approver(r.Context(), c.user, c.admin)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []api.AccessRequest{}
	for _, req := range list {
		var show bool
		switch {
		case all:
			show = ap.MayView(req)
		default:
			// Without --all: one's own, and what awaits one's decision.
			show = req.User == c.user.Name || ap.CanDecide(req) == nil
		}
		if show {
			out = append(out, requestAs(ap, req))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleRequest reads the request of the path for the caller; a request
// they may not see is answered as unknown.
func (s *Server) visibleRequest(w http.ResponseWriter, r *http.Request) (store.AccessRequest, bool) {
	c := callerFrom(r.Context())
	id := r.PathValue("id")
	req, err := s.Store.GetRequest(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, notFound("no access request "+id+": tunnel request ls --all lists those you may see"))
		return store.AccessRequest{}, false
	}
	if err != nil {
		s.fail(w, r, err)
		return store.AccessRequest{}, false
	}
	ok, err := s.decider().MayView(r.Context(), c.user, c.admin, req)
	if err != nil {
		s.fail(w, r, err)
		return store.AccessRequest{}, false
	}
	if !ok {
		s.fail(w, r, notFound("no access request "+id+": tunnel request ls --all lists those you may see"))
		return store.AccessRequest{}, false
	}
	return req, true
}

func (s *Server) handleGetRequest(w http.ResponseWriter, r *http.Request) {
	req, ok := s.visibleRequest(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.requestOut(r.Context(), callerFrom(r.Context()), req))
}

// handleWaitRequest answers the request as soon as it is no longer
// pending, or as it is after the timeout (at most api.MaxRequestWait). It
// follows the store's changes (any gateway's decision), and reads the
// request again every few seconds besides.
func (s *Server) handleWaitRequest(w http.ResponseWriter, r *http.Request) {
	req, ok := s.visibleRequest(w, r)
	if !ok {
		return
	}
	timeout := api.MaxRequestWait
	if v := r.URL.Query().Get(api.WaitQueryTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			s.fail(w, r, badRequest(fmt.Sprintf("timeout %q is not a positive duration such as 30s", v)))
			return
		}
		timeout = min(d, api.MaxRequestWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	// Each watcher costs a change buffer: past maxWatchingWaits waits at
	// once, the others read the request every second instead.
	var changes <-chan store.Change
	poll := time.Second
	select {
	case watchingWaits <- struct{}{}:
		defer func() { <-watchingWaits }()
		var err error
		if changes, err = s.Store.Watch(ctx); err != nil {
			s.fail(w, r, err)
			return
		}
		poll = 5 * time.Second
	default:
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	// A shutting-down gateway answers at once (StopWaits, audit.go): the
	// client asks again, of this gateway once back or of another.
	stop := s.waits.done()
	for req.State == store.RequestPending {
		select {
		case <-stop:
			writeJSON(w, http.StatusOK, s.requestOut(r.Context(), callerFrom(r.Context()), req))
			return
		case <-ctx.Done():
			writeJSON(w, http.StatusOK, s.requestOut(r.Context(), callerFrom(r.Context()), req))
			return
		case c, open := <-changes:
			if !open {
				changes = nil
				continue
			}
			if c.Kind != store.ChangeResync && (c.Kind != store.ChangeRequest || c.ID != req.ID) {
				continue
			}
		case <-tick.C:
		}
		next, err := s.Store.GetRequest(ctx, req.ID)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			s.fail(w, r, err)
			return
		}
		req = next
	}
	writeJSON(w, http.StatusOK, s.requestOut(r.Context(), callerFrom(r.Context()), req))
}

func (s *Server) handleDecideRequest(state store.RequestState) http.HandlerFunc {
	verb := map[store.RequestState]string{store.RequestApproved: "approve", store.RequestDenied: "deny"}[state]
	return func(w http.ResponseWriter, r *http.Request) {
		c := callerFrom(r.Context())
		var in api.RequestDecision
		if err := api.Decode(r.Body, &in); err != nil {
			s.fail(w, r, badRequest(err.Error()))
			return
		}
		comment, err := checkText("comment", in.Comment, state == store.RequestDenied)
		if err != nil {
			if state == store.RequestDenied && strings.TrimSpace(in.Comment) == "" {
				err = badRequest("a denial needs a comment for the requester: tunnel request deny ID --comment \"...\"")
			}
			s.fail(w, r, err)
			return
		}
		req, ok := s.visibleRequest(w, r)
		if !ok {
			return
		}
		d := s.decider()
		if err := d.CheckDecide(r.Context(), c.user, req); err != nil {
			s.refuseRequest(w, r, req.ID, err)
			return
		}
		now := s.now()
		if !now.Before(req.PendingUntil) {
			s.expirePending(r.Context(), req, now)
			s.refuseRequest(w, r, req.ID, &access.Refusal{Msg: fmt.Sprintf("request %s was not decided in time and has expired: the requester may ask again", req.ID)})
			return
		}
		dec := store.RequestDecision{State: state, By: c.user.Name, Comment: comment, At: now}
		typ := audit.RequestDenied
		ev := s.adminEvent(r, typ, req.ID)
		ev.Details = map[string]string{"user": req.User, "role": req.Role}
		if state == store.RequestApproved {
			role, err := s.Store.GetRole(r.Context(), req.Role)
			if errors.Is(err, store.ErrNotFound) {
				s.refuseRequest(w, r, req.ID, &access.Refusal{Msg: fmt.Sprintf("role %s no longer exists, so request %s cannot be approved", req.Role, req.ID)})
				return
			}
			if err != nil {
				s.fail(w, r, err)
				return
			}
			dec.Start, dec.End = d.Window(role, req, now)
			ev.Type = audit.RequestApproved
			ev.Details["start"] = dec.Start.UTC().Format(time.RFC3339)
			ev.Details["end"] = dec.End.UTC().Format(time.RFC3339)
		}
		ev.Reason = comment
		got, err := s.Store.DecideRequest(r.Context(), req.ID, dec, ev)
		if errors.Is(err, store.ErrNotPending) {
			msg := fmt.Sprintf("request %s is %s already", req.ID, got.State)
			if got.DecidedBy != "" {
				msg = fmt.Sprintf("request %s was %s by %s already", req.ID, got.State, got.DecidedBy)
			}
			s.fail(w, r, conflict(msg))
			return
		}
		if err != nil {
			s.fail(w, r, storeError(err, verb+" request "+req.ID))
			return
		}
		s.log().Info("access request decided", "request", got.ID, "state", got.State, "by", c.user.Name, "end", got.End)
		writeJSON(w, http.StatusOK, s.requestOut(r.Context(), c, got))
	}
}

// expirePending ends a pending request found past its deadline (the
// gateways' timers do it too; whichever comes first writes the event).
func (s *Server) expirePending(ctx context.Context, req store.AccessRequest, now time.Time) {
	ev := audit.Event{Time: now, Type: audit.RequestExpired, Actor: "system", Subject: req.ID, Outcome: audit.Success,
		Reason: "not decided in time", Details: map[string]string{"user": req.User, "role": req.Role}}
	if _, _, err := s.Store.EndRequest(ctx, req.ID, store.RequestExpired, "system", "not decided in time", now, ev); err != nil {
		s.log().Warn("expire a pending access request", "request", req.ID, "err", err)
	}
}

func (s *Server) handleRevokeRequest(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var in api.RequestDecision
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	comment, err := checkText("comment", in.Comment, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, ok := s.visibleRequest(w, r)
	if !ok {
		return
	}
	if err := s.decider().CheckRevoke(r.Context(), c.user, c.admin, req); err != nil {
		s.refuseRequest(w, r, req.ID, err)
		return
	}
	now := s.now()
	ev := s.adminEvent(r, audit.RequestRevoked, req.ID)
	ev.Reason = comment
	ev.Details = map[string]string{"user": req.User, "role": req.Role, "end": req.End.UTC().Format(time.RFC3339)}
	got, changed, err := s.Store.EndRequest(r.Context(), req.ID, store.RequestRevoked, c.user.Name, comment, now, ev)
	if err != nil {
		s.fail(w, r, storeError(err, "revoke request "+req.ID))
		return
	}
	if !changed {
		s.fail(w, r, conflict(fmt.Sprintf("request %s is %s already", req.ID, got.State)))
		return
	}
	s.log().Info("access request revoked", "request", got.ID, "by", c.user.Name)
	// The live sessions and streams only this grant allowed end now on
	// this gateway; the others act on the store's change.
	if err := s.policyChanged(r, "request "+req.ID+" was revoked"); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.requestOut(r.Context(), c, got))
}
