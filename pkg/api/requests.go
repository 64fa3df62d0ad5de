package api

import (
	"net/url"
	"time"
)

// Just-in-time access requests (tunnel request ...; the web console uses
// the same endpoints). Every endpoint needs a logged-in user; what each
// caller may see and do is decided by the gateway (docs/REQUESTS.md).
const (
	// PathRequests: GET lists requests (query RequestsQuery*), POST
	// creates one (CreateAccessRequest; answer AccessRequest, 201).
	PathRequests = "/v1/requests"
)

// Query parameters of GET PathRequests.
const (
	// RequestsQueryAll=1: every request the caller may see (their own,
	// those they may decide, all for an admin), not only their own and
	// the pending ones they may decide.
	RequestsQueryAll = "all"
	// RequestsQueryState selects one state (pending, approved, denied,
	// expired, revoked).
	RequestsQueryState = "state"
	// WaitQueryTimeout is how long GET RequestWaitPath waits at most (a Go
	// duration, at most MaxRequestWait).
	WaitQueryTimeout = "timeout"
)

// MaxRequestWait caps one long poll of RequestWaitPath; the client polls
// again until the request is decided.
const MaxRequestWait = 50 * time.Second

// Request states as the API shows them (store.RequestState).
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
	RequestExpired  = "expired"
	RequestRevoked  = "revoked"
)

// CreateAccessRequest is the body of POST PathRequests.
type CreateAccessRequest struct {
	Role string `json:"role"`
	// Duration is the window asked for ("2h"); the window granted starts
	// at the approval and is at most the role's max TTL.
	Duration Duration `json:"duration"`
	Reason   string   `json:"reason"`
}

// RequestDecision is the body of POST RequestPath(ID)/approve, /deny and
// /revoke. A denial needs a comment.
type RequestDecision struct {
	Comment string `json:"comment,omitempty"`
}

// AccessRequest is a request as the API shows it. Times are UTC; the
// zero ones are left out.
type AccessRequest struct {
	ID           string    `json:"id"`
	User         string    `json:"user"`
	Role         string    `json:"role"`
	Reason       string    `json:"reason"`
	Duration     Duration  `json:"duration"`
	State        string    `json:"state"`
	CreatedAt    time.Time `json:"created_at"`
	PendingUntil time.Time `json:"pending_until,omitzero"`
	DecidedAt    time.Time `json:"decided_at,omitzero"`
	DecidedBy    string    `json:"decided_by,omitempty"`
	Comment      string    `json:"comment,omitempty"`
	// Start and End are the window of an approved request.
	Start     time.Time `json:"start,omitzero"`
	End       time.Time `json:"end,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	EndedBy   string    `json:"ended_by,omitempty"`
	EndReason string    `json:"end_reason,omitempty"`
	// CanDecide and CanRevoke say what the caller may do with it now (for
	// the console's buttons; the gateway checks again on every action).
	CanDecide bool `json:"can_decide,omitempty"`
	CanRevoke bool `json:"can_revoke,omitempty"`
}

// Final reports whether the request can no longer change.
func (r AccessRequest) Final() bool {
	return r.State == RequestDenied || r.State == RequestExpired || r.State == RequestRevoked
}

// RequestPath is the path of the request id (GET: AccessRequest).
func RequestPath(id string) string { return PathRequests + "/" + url.PathEscape(id) }

// RequestActionPath is the path of an action on the request id:
// "approve", "deny" or "revoke" (POST RequestDecision; answer
// AccessRequest).
func RequestActionPath(id, action string) string { return RequestPath(id) + "/" + action }

// RequestWaitPath is the long poll of the request id: GET answers the
// request as soon as it is no longer pending, or as it is when the
// timeout (WaitQueryTimeout) passes.
func RequestWaitPath(id string) string { return RequestPath(id) + "/wait" }
