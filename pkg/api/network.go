package api

import (
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// PathAdminNetwork lists (GET) and adds (POST NetworkRuleRequest) the
// cluster's network rules; DELETE PathAdminNetwork/{id} removes one.
// Admin only. Adding or removing a rule that would refuse the caller's own
// address on the API is refused with CodeConflict unless force=true (in
// the body for POST, the query for DELETE).
const PathAdminNetwork = "/v1/admin/network"

// NetworkRule is a network rule as the admin API shows it.
type NetworkRule struct {
	ID     int64  `json:"id"`
	Effect string `json:"effect"` // "allow" or "deny"
	// CIDR is canonical: "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32".
	CIDR string `json:"cidr"`
	// Listener is "api", "quic", "ssh" or "all".
	Listener  string    `json:"listener"`
	Comment   string    `json:"comment,omitempty"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// NetworkRuleRequest adds a rule (POST PathAdminNetwork).
type NetworkRuleRequest struct {
	Effect string `json:"effect"`
	// CIDR is a network ("10.0.0.0/8") or one address ("192.0.2.7").
	CIDR string `json:"cidr"`
	// Listener: "api", "quic", "ssh" or "all"; empty means "all".
	Listener string `json:"listener,omitempty"`
	Comment  string `json:"comment,omitempty"`
	// Force adds the rule even if it would refuse the caller's own address
	// on the API.
	Force bool `json:"force,omitempty"`
}

// Query parameters of GET PathAudit besides after and limit. With any of
// them the answer is an AuditEvents, not a bare list:
//
//   - type: event types, comma-separated; "login.*" matches every type
//     starting with "login.";
//   - user: events whose actor or subject is this user;
//   - since: events at or after this time (RFC 3339);
//   - wait: a duration up to AuditMaxWait: with no matching event yet,
//     the gateway holds the request until one is committed (by any
//     gateway) or the wait ends (long poll).
const (
	AuditQueryType  = "type"
	AuditQueryUser  = "user"
	AuditQuerySince = "since"
	AuditQueryWait  = "wait"
)

// AuditAfterEnd as after= starts at the end of the log: the answer (an
// AuditEvents) holds only events committed from then on.
const AuditAfterEnd = "end"

// AuditMaxWait bounds the wait of a long poll of PathAudit, well below the
// client's and the gateway's request timeouts.
const AuditMaxWait = 20 * time.Second

// AuditEvents answers GET PathAudit with filters or a wait.
type AuditEvents struct {
	Events []audit.Event `json:"events"`
	// Next is the after= of the next request: the last event the gateway
	// looked at (matching or not), so that a filtered follow never reads
	// the same events twice.
	Next int64 `json:"next"`
}
