// Package api defines the gateway's HTTPS API: paths, request and response
// bodies, and the strict decoder the gateway uses on every request body.
//
// Both ends import it: the gateway (gateway/internal/apiserver) to serve,
// the `tunnel` client (client/apiclient) to call. Bodies are JSON. A
// request body is bounded in size, must be a single JSON object, and may not
// carry unknown fields ([Decode]).
//
// Errors travel as [Error] with an HTTP status; Message is written for the
// person at the terminal and never holds internal detail.
package api

import (
	"time"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Version is the API's version, the first element of every path.
const Version = "v1"

// Paths. Admin paths need a client certificate of a user holding an admin role.
const (
	PathPing        = "/v1/ping"
	PathCA          = "/v1/ca"
	PathLogin       = "/v1/login"
	PathWhoami      = "/v1/whoami"
	PathUsers       = "/v1/admin/users"
	PathRoles       = "/v1/admin/roles"
	PathAudit       = "/v1/admin/audit"
	PathAuditVerify = "/v1/admin/audit/verify"
	PathTokens      = "/v1/admin/tokens"
	PathAgents      = "/v1/admin/agents"
	PathPolicy      = "/v1/admin/policy"
	// PathEnroll is anonymous (the join token authenticates) and
	// rate-limited; PathRenew needs the agent's current certificate.
	PathEnroll = "/v1/agents/enroll"
	PathRenew  = "/v1/agents/renew"
	// PathNodes lists the nodes and services the caller may reach.
	PathNodes = "/v1/nodes"
	// PathSessions: POST asks for a bastion session for the caller.
	PathSessions = "/v1/sessions"
	// PathAdminSessions: GET lists sessions; POST {id}/revoke ends one;
	// GET {id}/recording returns its recording (asciicast v2).
	PathAdminSessions = "/v1/admin/sessions"
	// PathRecordings: POST {id} by the agent that recorded the session.
	PathRecordings = "/v1/agents/recordings"
)

// SSHService is the reserved service name of every node's SSH endpoint.
const SSHService = "ssh"

// Error is the body of every non-2xx answer.
type Error struct {
	// Message is one line a user can act on.
	Message string `json:"error"`
	// Code is a stable machine-readable identifier (see the Code constants).
	Code string `json:"code"`
	// RetryAfter, in seconds, when the caller should wait.
	RetryAfter int `json:"retry_after,omitempty"`
}

// Error codes.
const (
	CodeInvalidCredentials = "invalid_credentials"
	CodeReplayedCode       = "replayed_code"
	CodeLockedOut          = "locked_out"
	CodeRateLimited        = "rate_limited"
	CodeBadRequest         = "bad_request"
	CodeUnauthenticated    = "unauthenticated"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeConflict           = "conflict"
	CodeTTLTooLong         = "ttl_too_long"
	CodeInternal           = "internal"
)

func (e *Error) Error() string { return e.Message }

// Ping answers PathPing.
type Ping struct {
	Cluster string `json:"cluster"`
	Version string `json:"version"`
}

// CA answers PathCA: the cluster's trust anchors, public by nature. It is
// the bundle gateways also push to agents (wire.Trust): the active X.509
// CA's PEM first, the SSH CAs as authorized_keys lines (active first), the
// pin of the active X.509 CA, and the epoch that versions the bundle (the
// store's CA epoch it was read at, store.CAEpochMeta; 0 from a gateway
// that does not send it).
type CA = wire.Trust

// LoginRequest is the body of PathLogin.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	OTP      string `json:"otp"`
	// CSR is a PEM PKCS#10 request signed with the client's key; it proves
	// the client holds the private key.
	CSR string `json:"csr"`
	// SSHPublicKey is an authorized_keys line of the same key pair.
	SSHPublicKey string `json:"ssh_public_key"`
	// TTL asked for; zero means the default (1 h, capped by the role).
	TTL Duration `json:"ttl,omitempty"`
}

// LoginResponse answers a successful login.
type LoginResponse struct {
	User  string   `json:"user"`
	Roles []string `json:"roles"`
	// Logins are the SSH principals of SSHCertificate.
	Logins []string `json:"logins"`
	// X509Certificate is PEM.
	X509Certificate string `json:"x509_certificate"`
	// SSHCertificate is an authorized_keys line; empty when the user's roles
	// grant no login (an SSH certificate without principals would let its
	// holder in as anyone).
	SSHCertificate string    `json:"ssh_certificate,omitempty"`
	NotAfter       time.Time `json:"not_after"`
	CA             CA        `json:"ca"`
	// Warning is shown to the user when set (for example a TTL cut down).
	Warning string `json:"warning,omitempty"`
}

// Whoami answers PathWhoami for the caller's client certificate.
type Whoami struct {
	User     string    `json:"user"`
	Roles    []string  `json:"roles"`
	Logins   []string  `json:"logins"`
	Admin    bool      `json:"admin"`
	NotAfter time.Time `json:"not_after"`
}

// User is a user as the admin API shows it (no secrets).
type User struct {
	Name      string    `json:"name"`
	Roles     []string  `json:"roles"`
	Locked    bool      `json:"locked"`
	CreatedAt time.Time `json:"created_at"`
	// LockedOutUntil is set while failed logins keep the account locked out.
	LockedOutUntil *time.Time `json:"locked_out_until,omitempty"`
}

// CreateUserRequest is the body of POST PathUsers.
type CreateUserRequest struct {
	Name     string   `json:"name"`
	Roles    []string `json:"roles"`
	Password string   `json:"password"`
}

// Enrollment is the TOTP enrolment of a new user or a reset: show it once.
type Enrollment struct {
	User string `json:"user"`
	// URI is the otpauth:// URI authenticator apps read from a QR code.
	URI    string `json:"otpauth_uri"`
	Secret string `json:"secret"`
}

// Role is a role in the admin API.
type Role struct {
	Name   string   `json:"name"`
	Logins []string `json:"logins"`
	MaxTTL Duration `json:"max_ttl,omitempty"`
	Admin  bool     `json:"admin"`
	// Nodes are node patterns for SSH (next issue); Services are
	// "node/service" patterns the role may reach through tunnels.
	Nodes    []string `json:"nodes,omitempty"`
	Services []string `json:"services,omitempty"`
	// PortForwarding and AgentForwarding allow ssh -L/-W and ssh -A in
	// the role's SSH sessions (off by default).
	PortForwarding  bool      `json:"port_forwarding,omitempty"`
	AgentForwarding bool      `json:"agent_forwarding,omitempty"`
	CreatedAt       time.Time `json:"created_at,omitzero"`
	// Approve are the roles whose access requests the role's holders may
	// approve or deny (docs/REQUESTS.md).
	Approve []string `json:"approve,omitempty"`
	// Sudo lets the role's logins use sudo on the node for the length of
	// an SSH session the role allows.
	Sudo bool `json:"sudo,omitempty"`
	// Sources are the networks (CIDRs) the role counts from; none means
	// from anywhere (docs/NETWORK.md).
	Sources []string `json:"sources,omitempty"`
}

// CreateTokenRequest is the body of POST PathTokens.
type CreateTokenRequest struct {
	Agent string `json:"agent"`
	// TTL of the token; zero means 30 minutes.
	TTL Duration `json:"ttl,omitempty"`
}

// Token is a new join token: shown once, stored only hashed.
type Token struct {
	Token     string    `json:"token"`
	Agent     string    `json:"agent"`
	ExpiresAt time.Time `json:"expires_at"`
}

// EnrollRequest is the body of PathEnroll.
type EnrollRequest struct {
	Token string `json:"token"`
	// CSR is a PEM PKCS#10 request signed with the agent's key.
	CSR string `json:"csr"`
	// SSHHostKey is the authorized_keys line of the agent's SSH host key.
	SSHHostKey string `json:"ssh_host_key"`
}

// RenewRequest is the body of PathRenew, sent with the current certificate.
type RenewRequest struct {
	CSR        string `json:"csr"`
	SSHHostKey string `json:"ssh_host_key"`
}

// AgentIdentity answers an enrolment or a renewal.
type AgentIdentity struct {
	Agent              string    `json:"agent"`
	X509Certificate    string    `json:"x509_certificate"`
	SSHHostCertificate string    `json:"ssh_host_certificate"`
	NotAfter           time.Time `json:"not_after"`
	CA                 CA        `json:"ca"`
}

// Agent is an agent as the admin API shows it.
type Agent struct {
	Name       string     `json:"name"`
	Locked     bool       `json:"locked"`
	Online     bool       `json:"online"`
	Services   []string   `json:"services"`
	Since      *time.Time `json:"connected_since,omitempty"`
	LastSeen   *time.Time `json:"last_seen,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	EnrolledAt time.Time  `json:"enrolled_at"`
	// Direct is "on" when the connected agent takes the direct path
	// (streams between agents off the gateway), "off" when it does not
	// (direct: off in its file, or the gateway does not broker it); empty
	// when it is offline. DirectStreams and RelayedStreams count the
	// streams it opened that are live now, as the gateway answering sees
	// them.
	Direct string `json:"direct,omitempty"`
	// TrustEpoch is the epoch of the trust bundle the connected agent says
	// it holds (CA.Epoch); 0 when offline or not said.
	TrustEpoch     uint64 `json:"trust_epoch,omitempty"`
	DirectStreams  int    `json:"direct_streams,omitempty"`
	RelayedStreams int    `json:"relayed_streams,omitempty"`
}

// PolicyRule is a policy rule in the admin API. POST PathPolicy takes one
// with Effect, From and To.
type PolicyRule struct {
	ID        int64     `json:"id,omitempty"`
	Effect    string    `json:"effect"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Node is a node the caller may reach (GET PathNodes).
type Node struct {
	Name     string   `json:"name"`
	Online   bool     `json:"online"`
	Services []string `json:"services"`
}

// AuditVerify answers PathAuditVerify.
type AuditVerify struct {
	OK     bool   `json:"ok"`
	Events int64  `json:"events"`
	Head   string `json:"head"`
	// BrokenAt and Problem describe the first broken link when OK is false.
	BrokenAt int64  `json:"broken_at,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

// CreateSessionRequest is the body of POST PathSessions.
type CreateSessionRequest struct {
	Node  string `json:"node"`
	Login string `json:"login"`
	// TTL of the session; zero means the default (1 h, or what is left of
	// the caller's login, capped by the role).
	TTL Duration `json:"ttl,omitempty"`
	// SSHPublicKey is the authorized_keys line of the key the session's
	// certificate is for (the key made at login).
	SSHPublicKey string `json:"ssh_public_key"`
}

// Session is a bastion session as the API shows it.
type Session struct {
	ID        string     `json:"id"`
	User      string     `json:"user"`
	Node      string     `json:"node"`
	Login     string     `json:"login"`
	CreatedAt time.Time  `json:"created_at"`
	Deadline  time.Time  `json:"deadline"`
	State     string     `json:"state"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	EndReason string     `json:"end_reason,omitempty"`
	BytesIn   int64      `json:"bytes_in"`
	BytesOut  int64      `json:"bytes_out"`
	SourceIP  string     `json:"source_ip,omitempty"`
	Recording bool       `json:"recording"`
}

// SessionGrant answers POST PathSessions: the session and an SSH
// certificate for exactly it (one principal, the session id in the key
// id, valid until the deadline).
type SessionGrant struct {
	Session        Session  `json:"session"`
	SSHCertificate string   `json:"ssh_certificate"`
	SSHHostCAs     []string `json:"ssh_host_cas"`
}
