// Package store defines the gateway's persistent state as one interface,
// [Store], and the records it holds.
//
// Two implementations satisfy it: the embedded SQLite store
// (pkg/store/sqlitestore, the default) and PostgreSQL (pkg/store/pgstore)
// for several gateways sharing one state. Both pass the same conformance suite in
// pkg/store/storetest, so callers never see which one they have.
//
// Every method that changes state takes the audit event that records the
// change and appends it in the same transaction: the change and its record
// land together or not at all, so an action whose event cannot be written
// is refused.
//
// Secrets arrive already sealed (pkg/seal) or hashed; the store never sees
// a plaintext secret.
package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
)

// Sentinel errors callers branch on. Implementations wrap them.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrLocked: the agent or user is locked by an administrator.
	ErrLocked = errors.New("locked by an administrator")
	// ErrUnavailable: the store could not be reached, or the connection to
	// it was lost (a PostgreSQL server down or restarting, a TLS failure).
	// The request itself may be fine: tell the user "the gateway cannot
	// reach its store: ..." and let them retry.
	ErrUnavailable = errors.New("store unavailable")
	// ErrLockedOut: too many failed logins for the name; see
	// ReserveLoginAttempt.
	ErrLockedOut = errors.New("locked out after repeated failed logins")
	// ErrTokenUsed and ErrTokenExpired refuse a join token.
	ErrTokenUsed    = errors.New("join token already used")
	ErrTokenExpired = errors.New("join token expired")
)

// User is an engineer or admin who logs in with a password and TOTP.
type User struct {
	// Name is the canonical user name (see CanonicalName); unique.
	Name string
	// PasswordHash is an argon2id PHC string.
	PasswordHash string
	// TOTPSecret is the TOTP secret, sealed with the label "totp/<name>".
	TOTPSecret []byte
	// TOTPLastStep is the last accepted TOTP time step; a code whose step is
	// not greater is a replay.
	TOTPLastStep int64
	Roles        []string
	// Locked is an administrative lock (tunnel admin users lock).
	Locked    bool
	CreatedAt time.Time
}

// Role says what its holders may do.
type Role struct {
	Name string
	// Logins are the OS logins (SSH principals) the role grants.
	Logins []string
	// MaxTTL caps the lifetime of certificates issued to holders; zero means
	// the cluster maximum.
	MaxTTL time.Duration
	// Admin grants the admin API.
	Admin bool
	// Nodes are patterns of the nodes the role may reach over SSH ("web-*",
	// "*"); none means none.
	Nodes []string
	// Services are "node/service" patterns the role may reach through a
	// tunnel (tunnel proxy db); either part may be "*".
	Services []string
	// PortForwarding and AgentForwarding allow ssh -L/-W and ssh -A in the
	// role's SSH sessions; both are off unless a role allows them.
	PortForwarding, AgentForwarding bool
	CreatedAt                       time.Time
	// Approve are the roles whose access requests the role's holders may
	// approve or deny (tunnel admin roles add oncall-lead --approve dba).
	Approve []string
	// Sudo lets the role's logins use sudo on the node for the length of
	// an SSH session the role allows (a sudoers drop-in the node's SSH
	// endpoint puts in place for the session only).
	Sudo bool
	// Sources are the networks (CIDRs, "10.0.0.0/8") the role counts from:
	// a caller whose source address is in none of them does not hold the
	// role for that login or session. None means from anywhere.
	Sources []string
}

// Agent is the agent of one node (VM).
type Agent struct {
	Name string
	// Locked refuses the agent's connections, enrolment and renewal.
	Locked bool
	// CreatedAt is the first enrolment, EnrolledAt the latest.
	CreatedAt  time.Time
	EnrolledAt time.Time
	// LastSeen is the last time the agent was connected (zero if never).
	LastSeen time.Time
}

// JoinToken admits one agent, once, before it expires.
type JoinToken struct {
	// Hash is the lowercase hex SHA-256 of the token; the token itself is
	// never stored.
	Hash      string
	Agent     string
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt time.Time
	// UsedAt is zero until the token is used.
	UsedAt time.Time
}

// Effect of a policy rule.
type Effect string

// Effects. Deny wins over allow; no rule means deny.
const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
)

// PolicyRule allows or denies streams from agents to services.
type PolicyRule struct {
	ID     int64
	Effect Effect
	// From is an agent name or "*".
	From string
	// To is "node/service"; either part may be "*".
	To        string
	CreatedBy string
	CreatedAt time.Time
}

// LoginFailures is the consecutive-failure counter of one canonical user
// name, kept whether or not such a user exists.
type LoginFailures struct {
	Name        string
	Count       int
	LockedUntil time.Time // zero when not locked out
}

// CertKind tells which kind of certificate a record describes.
type CertKind string

// Certificate kinds.
const (
	CertX509    CertKind = "x509"
	CertSSHUser CertKind = "ssh-user"
	CertSSHHost CertKind = "ssh-host"
)

// IssuedCert records a certificate the CA signed, so it can be listed and,
// later, revoked by serial.
type IssuedCert struct {
	// Serial is the certificate's serial number in lowercase hex; unique
	// within Kind.
	Serial  string
	Kind    CertKind
	Subject string // user or agent name
	// SubjectKind says whether Subject names a user or an agent: a user and
	// an agent may share a name, and revoking one must never touch the other.
	SubjectKind identity.Kind
	NotBefore   time.Time
	NotAfter    time.Time
	IssuedAt    time.Time
	// Principals are the SSH principals or the X.509 URI SANs.
	Principals []string
	// RevokedAt is zero unless the certificate was revoked.
	RevokedAt time.Time
}

// CAKey is one key of the cluster's certificate authority.
type CAKey struct {
	// Kind is "x509", "ssh-user" or "ssh-host".
	Kind string
	// Public is the X.509 CA certificate (DER) or the SSH public key
	// (wire format).
	Public []byte
	// SealedPrivate is the private key sealed with the label "ca/<kind>".
	SealedPrivate []byte
	CreatedAt     time.Time
	// Active marks the key that signs; inactive keys are still trusted
	// during a rotation's grace period.
	Active bool
}

// SessionState of a bastion session.
type SessionState string

// Session states. A session is created active and ends once, in one of the
// other three; an ended session never changes state again.
const (
	SessionActive  SessionState = "active"
	SessionExpired SessionState = "expired"
	SessionRevoked SessionState = "revoked"
	SessionClosed  SessionState = "closed"
)

// Session is a bastion session: a time-limited grant to one user of one
// login on one node.
type Session struct {
	// ID is random and URL-safe (letters, digits, '-', '_', '.', '~', at
	// most 128 bytes); unique.
	ID        string
	User      string
	Node      string
	Login     string
	CreatedAt time.Time
	Deadline  time.Time
	State     SessionState
	// EndedAt is zero while the session is active.
	EndedAt time.Time
	// EndReason says why it ended, for an operator: "session expired",
	// "access revoked by an administrator", "closed by the client"...
	EndReason string
	// BytesIn and BytesOut are the totals reported so far (AddSessionBytes),
	// while the session runs and when it ends.
	BytesIn, BytesOut int64
	SourceIP          string
	// CertSerial is the serial (lowercase hex) of the SSH certificate
	// issued for the session.
	CertSerial string
	// Recording says a recording of the session is stored (SaveRecording);
	// CreateSession ignores it.
	Recording bool
}

// SessionFilter selects sessions. Zero values select everything.
type SessionFilter struct {
	User string // sessions of this user
	Node string // sessions on this node
	// ActiveOnly selects sessions whose state is active (a session past its
	// deadline stays active until it is ended as expired).
	ActiveOnly bool
	Limit      int // at most this many, newest first; 0 means no limit
}

// ChangeCert: a certificate was revoked. RevokeCertificates emits one per
// certificate it revokes, committed with the revocation, so that every
// gateway sharing the store closes the live connections (QUIC, jump host
// SSH) that were authenticated with it: an agent enrolled again on one
// gateway while its earlier identity still holds a connection to another,
// a login certificate revoked with its session. ID is CertChangeID of the
// certificate's kind and serial, Subject its subject (a user or agent
// name). A revocation is never undone, so the change itself says what
// happened; the store's deny list (RevokedCertificates) is what a
// reconciliation reads.
const ChangeCert ChangeKind = "cert"

// CertChangeID is the ID of the ChangeCert of the kind certificate with
// serial: "x509:1f2e3d...".
func CertChangeID(kind CertKind, serial string) string {
	return string(kind) + ":" + serial
}

// ParseCertChangeID returns the kind and serial a ChangeCert ID names; ok
// is false if id is not one.
func ParseCertChangeID(id string) (kind CertKind, serial string, ok bool) {
	k, s, ok := strings.Cut(id, ":")
	if !ok || k == "" || s == "" {
		return "", "", false
	}
	return CertKind(k), s, true
}

// RevokeFilter selects the certificates RevokeCertificates revokes. At
// least one of Subject and Serial must be set; the fields that are set must
// all match.
type RevokeFilter struct {
	Subject string // user or agent name
	// SubjectKind must be set with Subject: the certificates of the user
	// alice and of the agent alice are different principals'.
	SubjectKind identity.Kind
	Serial      string   // one certificate (lowercase hex)
	Kind        CertKind // "" for every kind
}

// AuditFilter selects audit events. Zero values select everything.
type AuditFilter struct {
	AfterSeq int64 // events with Seq > AfterSeq
	Limit    int   // at most this many, oldest first; 0 means no limit
}

// Store is the gateway's persistent state. Implementations are safe for
// concurrent use.
type Store interface {
	// Close releases the store; it is safe to call more than once.
	Close() error

	// Cluster metadata (name, creation time...). GetMeta returns
	// ErrNotFound for a missing key.
	GetMeta(ctx context.Context, key string) (string, error)
	// Initialize records the cluster's metadata and CA keys and appends ev,
	// once: it returns ErrExists if the store was already initialised.
	Initialize(ctx context.Context, meta map[string]string, keys []CAKey, ev audit.Event) error
	// CAKeys returns every CA key, active or not.
	CAKeys(ctx context.Context) ([]CAKey, error)

	CreateUser(ctx context.Context, u User, ev audit.Event) error
	// GetUser returns ErrNotFound for an unknown name.
	GetUser(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	DeleteUser(ctx context.Context, name string, ev audit.Event) error
	SetUserLocked(ctx context.Context, name string, locked bool, ev audit.Event) error
	// ResetMFA installs a new sealed TOTP secret and resets the last step.
	ResetMFA(ctx context.Context, name string, sealedSecret []byte, ev audit.Event) error
	// SetPasswordHash replaces a user's password hash (after a rehash with
	// stronger parameters, or a reset).
	SetPasswordHash(ctx context.Context, name, hash string, ev audit.Event) error
	// AcceptTOTPStep atomically records step as the user's last accepted TOTP
	// step if and only if it is greater than the one stored. It reports
	// whether the step was accepted; false means a replay.
	AcceptTOTPStep(ctx context.Context, name string, step int64) (bool, error)

	// LoginFailures returns the counter for a canonical name (a zero
	// counter if there is none).
	LoginFailures(ctx context.Context, name string) (LoginFailures, error)
	// ReserveLoginAttempt atomically counts one login attempt for name
	// before its credentials are checked, so that concurrent attempts can
	// never be evaluated past the lockout: at most max attempts are reserved
	// per lockout period, whatever the concurrency. If name is locked out at
	// now it reserves nothing and returns the counter with ErrLockedOut. If
	// an earlier lockout has ended the counter restarts. The reservation
	// that brings the count to max sets LockedUntil to now+lockout (that
	// attempt is still evaluated). A reserved attempt counts as a failure
	// unless the login succeeds and calls ClearLoginFailures. max <= 0 never
	// locks out.
	ReserveLoginAttempt(ctx context.Context, name string, now time.Time, max int, lockout time.Duration) (LoginFailures, error)
	// ClearLoginFailures resets the counter after a successful login.
	ClearLoginFailures(ctx context.Context, name string) error

	CreateRole(ctx context.Context, r Role, ev audit.Event) error
	// UpdateRole replaces every field of the role r.Name but CreatedAt;
	// ErrNotFound if there is no such role.
	UpdateRole(ctx context.Context, r Role, ev audit.Event) error
	// SetUserRoles replaces a user's roles; ErrNotFound (wrapped, naming
	// it) for an unknown user or role.
	SetUserRoles(ctx context.Context, name string, roles []string, ev audit.Event) error
	GetRole(ctx context.Context, name string) (Role, error)
	ListRoles(ctx context.Context) ([]Role, error)
	// DeleteRole removes a role; it returns ErrExists (wrapped) while users
	// still hold it.
	DeleteRole(ctx context.Context, name string, ev audit.Event) error

	// RecordCertificates records certificates issued together (for one
	// login) with their audit events, all in one transaction. A serial that
	// is already recorded for the same kind gives ErrExists.
	RecordCertificates(ctx context.Context, certs []IssuedCert, evs []audit.Event) error
	// GetCertificate returns ErrNotFound for an unknown serial.
	GetCertificate(ctx context.Context, kind CertKind, serial string) (IssuedCert, error)

	// AppendAudit appends one event on its own.
	AppendAudit(ctx context.Context, ev audit.Event) (audit.Event, error)
	// AppendAudits appends several events in one transaction (group
	// commit), in order, and returns them chained.
	AppendAudits(ctx context.Context, evs []audit.Event) ([]audit.Event, error)
	// ListAudit returns events in log order.
	ListAudit(ctx context.Context, f AuditFilter) ([]audit.Event, error)
	// CreateJoinToken records a new join token for t.Agent.
	CreateJoinToken(ctx context.Context, t JoinToken, ev audit.Event) error
	// ConsumeJoinToken uses the token with this hash at now, in one
	// transaction with ev: it must exist (ErrNotFound), be unused
	// (ErrTokenUsed) and unexpired (ErrTokenExpired), and its agent must not
	// be locked (ErrLocked). The agent is created, or its EnrolledAt updated.
	ConsumeJoinToken(ctx context.Context, hash string, now time.Time, ev audit.Event) (JoinToken, error)
	GetAgent(ctx context.Context, name string) (Agent, error)
	ListAgents(ctx context.Context) ([]Agent, error)
	SetAgentLocked(ctx context.Context, name string, locked bool, ev audit.Event) error
	// TouchAgent records that the agent was connected at seen.
	TouchAgent(ctx context.Context, name string, seen time.Time) error

	// AddPolicyRule records a rule and returns it with its ID. The same
	// effect, from and to twice gives ErrExists.
	AddPolicyRule(ctx context.Context, r PolicyRule, ev audit.Event) (PolicyRule, error)
	// ListPolicyRules returns every rule, by ID.
	ListPolicyRules(ctx context.Context) ([]PolicyRule, error)
	DeletePolicyRule(ctx context.Context, id int64, ev audit.Event) error

	// AuditHead returns the hash of the last event appended ("" if none),
	// recorded apart from the events so that truncation is detected.
	AuditHead(ctx context.Context) (string, error)

	// CreateSession records the session s, which must be active (an empty
	// State means active) and have a deadline, together with the
	// certificates issued for it and evs, all in one transaction. A
	// duplicate session ID or certificate serial gives ErrExists, and then
	// nothing is recorded. It gives ErrLocked if s.User is a locked user or
	// s.Node a locked agent, so that a session cannot slip in beside an
	// administrator's lock.
	CreateSession(ctx context.Context, s Session, certs []IssuedCert, evs []audit.Event) error
	// GetSession returns ErrNotFound for an unknown ID.
	GetSession(ctx context.Context, id string) (Session, error)
	// ListSessions returns the sessions f selects, newest (CreatedAt)
	// first.
	ListSessions(ctx context.Context, f SessionFilter) ([]Session, error)
	// EndSession ends the active session id at at in state (expired,
	// revoked or closed) for reason, appends ev and returns the session as
	// ended. Ending a session that has already ended is not an error: it
	// returns the session unchanged and appends nothing. An unknown ID gives
	// ErrNotFound.
	EndSession(ctx context.Context, id string, state SessionState, reason string, at time.Time, ev audit.Event) (Session, error)
	// AddSessionBytes adds in and out (not negative) to the session's byte
	// totals, whether or not it has ended. It appends no event. An unknown
	// ID gives ErrNotFound.
	AddSessionBytes(ctx context.Context, id string, in, out int64) error

	// RevokeCertificates revokes, as of at, the certificates f selects that
	// are neither revoked nor expired (NotAfter after at), appends ev, and
	// returns them, by kind and serial. When none is left to revoke it
	// returns none and appends nothing; a Serial that is not recorded at
	// all (for f's Subject and Kind) gives ErrNotFound. It emits one
	// ChangeCert per certificate it revokes, with the revocation.
	RevokeCertificates(ctx context.Context, f RevokeFilter, at time.Time, ev audit.Event) ([]IssuedCert, error)
	// RevokedCertificates returns the certificates revoked and not yet
	// expired at now (NotAfter after now), by kind and serial: the deny list
	// to push to agents.
	RevokedCertificates(ctx context.Context, now time.Time) ([]IssuedCert, error)

	// SaveRecording stores the recording of a session, sealed by the
	// caller, replacing any earlier one; the session's Recording becomes
	// true. An unknown session gives ErrNotFound. It appends no event: the
	// caller records RecordingSaved.
	SaveRecording(ctx context.Context, sessionID string, sealed []byte) error
	// GetRecording returns the sealed recording of a session, or ErrNotFound
	// if there is none.
	GetRecording(ctx context.Context, sessionID string) ([]byte, error)

	// UpsertGateway records g (a heartbeat): it inserts the gateway g.ID or
	// replaces every field of it. It appends no event.
	UpsertGateway(ctx context.Context, g Gateway) error
	// ListGateways returns every gateway recorded, by ID.
	ListGateways(ctx context.Context) ([]Gateway, error)
	// DeleteGateway removes the gateway id (on a clean shutdown); removing
	// one that is not there is not an error.
	DeleteGateway(ctx context.Context, id string) error

	// Watch returns the changes committed from now on (see Change), from
	// every gateway sharing the store, until ctx ends or the store closes,
	// when the channel is closed. A change is emitted in the transaction
	// that makes it, so it is seen only once committed. Delivery is
	// at-least-once in effect: whenever changes may have been missed (the
	// store lost its notification connection and got it back, or the
	// watcher fell behind) a ChangeResync is delivered, after which the
	// watcher must reconcile everything from the store.
	Watch(ctx context.Context) (<-chan Change, error)

	// Cluster-wide network rules (network.go).
	NetworkStore
	// Just-in-time access requests (requests.go).
	RequestStore
	// CA key rotation (carotation.go).
	CARotationStore
}
