package audit

// Audit event types of just-in-time access requests (tunnel request ...).
// Subject is the request ID; Details carry "user", "role" and, where there
// is one, the window ("start", "end").
const (
	// RequestCreated: a user asked for a role (Actor the requester).
	RequestCreated Type = "request.created"
	// RequestApproved and RequestDenied: an approver decided (Actor the
	// approver, Reason the comment).
	RequestApproved Type = "request.approved"
	RequestDenied   Type = "request.denied"
	// RequestRevoked: an approver or an admin ended an approved request
	// before the end of its window.
	RequestRevoked Type = "request.revoked"
	// RequestExpired: the window of an approved request ended, or a
	// pending request was not decided in time (Actor "system").
	RequestExpired Type = "request.expired"
	// RequestRefused: a request, a decision or a revocation was refused
	// (Outcome failure, Reason why: self-approval, not an approver...).
	RequestRefused Type = "request.refused"
)
