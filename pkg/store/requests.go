package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// ChangeRequest: a just-in-time access request was created, decided
// (approved or denied) or ended (expired or revoked). ID is the request
// ID, Subject its requester. Every gateway re-evaluates its live sessions
// and streams, and schedules the end of an approved request's window.
const ChangeRequest ChangeKind = "request"

// RequestState is the state of an access request.
type RequestState string

// Request states. A request is created pending; it is decided once
// (approved or denied), or expires while pending; an approved request ends
// once, expired at the end of its window or revoked before. Denied, expired
// and revoked are final.
const (
	RequestPending  RequestState = "pending"
	RequestApproved RequestState = "approved"
	RequestDenied   RequestState = "denied"
	RequestExpired  RequestState = "expired"
	RequestRevoked  RequestState = "revoked"
)

// Final reports whether st can no longer change.
func (st RequestState) Final() bool {
	return st == RequestDenied || st == RequestExpired || st == RequestRevoked
}

// ErrNotPending: the request was already decided (or has ended), so it
// cannot be decided again; of two approvers deciding at once, the second
// gets it.
var ErrNotPending = errors.New("the request is no longer pending")

// AccessRequest is a user's request for a role for a while (just-in-time
// access). While it is approved and now is in [Start, End) its role is
// added to the user's roles (gateway/internal/access).
type AccessRequest struct {
	// ID is random and URL-safe (the rules of CheckSessionID); unique.
	ID string
	// User asks for Role.
	User, Role string
	// Reason is the requester's justification ("INC-123: fix replication").
	Reason string
	// Duration is the window asked for; the window granted may be shorter
	// (capped by the role's MaxTTL).
	Duration  time.Duration
	State     RequestState
	CreatedAt time.Time
	// PendingUntil: a request still pending then expires.
	PendingUntil time.Time
	// DecidedAt, DecidedBy and Comment record the approval or denial
	// (zero and "" while pending, and for a request that expired
	// pending).
	DecidedAt time.Time
	DecidedBy string
	Comment   string
	// Start and End are the window of an approved request (zero
	// otherwise).
	Start, End time.Time
	// EndedAt, EndedBy and EndReason record how an approved request ended
	// (revoked by EndedBy, or expired with EndedBy "system"), or when a
	// pending one expired.
	EndedAt   time.Time
	EndedBy   string
	EndReason string
}

// ActiveAt reports whether r grants its role at now: approved, and now in
// [Start, End).
func (r AccessRequest) ActiveAt(now time.Time) bool {
	return r.State == RequestApproved && !now.Before(r.Start) && now.Before(r.End)
}

// RequestFilter selects access requests. Zero values select everything.
type RequestFilter struct {
	User   string         // requests of this user
	States []RequestState // in one of these states; none means any
	Limit  int            // at most this many, newest first; 0 means no limit
}

// RequestDecision approves or denies a pending request.
type RequestDecision struct {
	// State is RequestApproved or RequestDenied.
	State RequestState
	By    string
	// Comment is the approver's word to the requester; may be empty.
	Comment string
	At      time.Time
	// Start and End are the window granted, for an approval.
	Start, End time.Time
}

// CheckRequest reports what is wrong with a new request r, nil if nothing.
func CheckRequest(r AccessRequest) error {
	switch {
	case CheckSessionID(r.ID) != nil:
		return fmt.Errorf("request ID: %w", CheckSessionID(r.ID))
	case r.User == "" || r.Role == "":
		return errors.New("empty user or role")
	case r.State != "" && r.State != RequestPending:
		return fmt.Errorf("a new request must be pending, not %q", r.State)
	case r.Duration <= 0:
		return errors.New("no duration")
	case r.PendingUntil.IsZero():
		return errors.New("no pending deadline")
	case !r.DecidedAt.IsZero() || !r.Start.IsZero() || !r.EndedAt.IsZero():
		return errors.New("a new request cannot have been decided")
	}
	return nil
}

// CheckDecision reports what is wrong with d, nil if nothing.
func CheckDecision(d RequestDecision) error {
	switch {
	case d.State != RequestApproved && d.State != RequestDenied:
		return fmt.Errorf("cannot decide a request as %q", d.State)
	case d.By == "":
		return errors.New("no approver")
	case d.At.IsZero():
		return errors.New("no decision time")
	case d.State == RequestApproved && (d.Start.IsZero() || !d.End.After(d.Start)):
		return errors.New("an approval needs a window")
	case d.State == RequestDenied && (!d.Start.IsZero() || !d.End.IsZero()):
		return errors.New("a denial has no window")
	}
	return nil
}

// RequestStore holds just-in-time access requests. Every call that
// changes a request emits a ChangeRequest.
type RequestStore interface {
	// CreateRequest records the new pending request r (an empty State
	// means pending) and appends ev. A duplicate ID gives ErrExists; an
	// unknown user or role gives ErrNotFound.
	CreateRequest(ctx context.Context, r AccessRequest, ev audit.Event) error
	// GetRequest returns ErrNotFound for an unknown ID.
	GetRequest(ctx context.Context, id string) (AccessRequest, error)
	// ListRequests returns the requests f selects, newest (CreatedAt)
	// first.
	ListRequests(ctx context.Context, f RequestFilter) ([]AccessRequest, error)
	// DecideRequest approves or denies the pending request id, appends ev
	// and returns the request as decided, atomically: of two decisions
	// made at once exactly one succeeds; the other gets an error wrapping
	// ErrNotPending (with the request as it is), and appends nothing. An
	// unknown ID gives ErrNotFound.
	DecideRequest(ctx context.Context, id string, d RequestDecision, ev audit.Event) (AccessRequest, error)
	// EndRequest ends the request id at at in state: RequestRevoked (an
	// approved request) or RequestExpired (an approved or a pending one),
	// by (a user, or "system"), for reason; it appends ev and returns the
	// request as ended and true. A request in any other state is returned
	// as it is, with false and no event (of two concurrent ends the first
	// wins). An unknown ID gives ErrNotFound.
	EndRequest(ctx context.Context, id string, state RequestState, by, reason string, at time.Time, ev audit.Event) (AccessRequest, bool, error)
	// ActiveGrants returns the requests of user that grant their role at
	// now (AccessRequest.ActiveAt), by End.
	ActiveGrants(ctx context.Context, user string, now time.Time) ([]AccessRequest, error)
}
