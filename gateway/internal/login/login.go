// Package login authenticates users with a password and a TOTP code and
// issues their short-lived certificates.
//
// [Service.Login] is the whole flow: the attempt is reserved against the
// lockout before anything secret is checked, then the argon2id password
// check (a dummy hash for unknown users, so every failure costs the same),
// the TOTP check with an atomic replay guard, the TTL capped by role and
// cluster, then an X.509 client certificate and an SSH user certificate for
// the client's own public key. Every attempt is an audit event; a
// certificate whose record or event cannot be written is never handed out.
//
// The reservation (Store.ReserveLoginAttempt) is one atomic store step, so
// that at most [auth.LockoutPolicy] MaxFailures attempts per user name are
// ever evaluated per lockout period, however many run at once: without it,
// attempts sent together would all read the counter before any of them
// wrote it, and a known password plus many parallel guesses would
// brute-force the code. Only a successful login releases the reservation.
//
// Failures say only "invalid credentials" until the caller has proved both
// the password and a valid code; only then may an error say more (replayed
// code, locked account).
package login

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Service logs users in. The zero value is not usable; fill every field
// but Clock and Log, which default to time.Now and a discarding logger.
type Service struct {
	Store   store.Store
	CA      *certs.Authority
	Sealer  seal.Sealer
	Hasher  *auth.Hasher
	Lockout auth.LockoutPolicy
	// Denials, if set, folds the refusals that prove nothing and that a
	// caller can repeat at will (a name locked out, a malformed name) into
	// one event per kind and interval, so that hammering a locked-out name
	// cannot fill the audit log. Nil writes each one.
	Denials *auditlog.Folder
	Clock   func() time.Time
	Log     *slog.Logger
	// Access decides what a user's roles grant at login; nil means one of
	// the Service's own over Store and CA.
	Access     *access.Decider
	accessOnce sync.Once
}

// recordRefusal writes ev through Denials (folded) when set, else
// directly.
func (s *Service) recordRefusal(ctx context.Context, ev audit.Event) error {
	return s.Denials.Write(ctx, func(ctx context.Context, ev audit.Event) error {
		_, err := s.Store.AppendAudit(ctx, ev)
		return err
	}, ev)
}

// Error is a login failure to show the caller.
type Error struct {
	Status     int // HTTP status
	Code       string
	Message    string
	RetryAfter time.Duration
	// cause is kept for logs and audit, never shown to the caller.
	cause error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.cause }

// ErrInvalidCredentials is the one answer for unknown user, wrong password
// and wrong code.
var ErrInvalidCredentials = &Error{Status: 401, Code: api.CodeInvalidCredentials,
	Message: "invalid credentials: check the user name, the password and the code"}

func (s *Service) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock()
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Login runs the whole login flow for a request from src.
func (s *Service) Login(ctx context.Context, req api.LoginRequest, src netip.Addr) (*api.LoginResponse, error) {
	now := s.now()
	name := identity.CanonicalName(req.User)
	policy := s.Lockout.WithDefaults()

	ev := func(outcome audit.Outcome, reason string) audit.Event {
		return audit.Event{Time: now, Type: audit.LoginFailure, Actor: name, Subject: name,
			Outcome: outcome, Reason: reason, SourceIP: addrString(src)}
	}
	// badRequest refuses a malformed request: audited, but not counted as
	// a failed login, since it proves nothing about the credentials.
	badRequest := func(msg string) error {
		e := ev(audit.Failure, "malformed request: "+truncate(msg, 200))
		if identity.ValidateName("user", name) != nil {
			e.Actor, e.Subject = "anonymous", ""
		}
		// Folded: a malformed request proves nothing and anyone can send
		// it at will.
		if err := s.recordRefusal(ctx, e); err != nil {
			return internal("record login failure", err)
		}
		return &Error{Status: 400, Code: api.CodeBadRequest, Message: msg}
	}

	// The keys are checked first: they carry no secret, and a malformed
	// request should not count as a failed login.
	csr, sshKey, err := parseKeys(req)
	if err != nil {
		return nil, badRequest(err.Error())
	}
	if req.TTL < 0 {
		// Refused here, like the keys, rather than by the CA after the code
		// was consumed.
		return nil, badRequest(fmt.Sprintf("requested TTL %s is negative", time.Duration(req.TTL)))
	}

	if identity.ValidateName("user", name) != nil {
		// Not a name we could have: cost the same and say the same, but
		// keep junk out of the failure table.
		_ = s.Hasher.VerifyDummy(ctx, []byte(req.Password)) // for the time it takes
		e := ev(audit.Failure, "malformed user name")
		e.Actor, e.Subject = "anonymous", ""
		if err := s.recordRefusal(ctx, e); err != nil {
			return nil, internal("record login failure", err)
		}
		return nil, ErrInvalidCredentials
	}

	// Reserve the attempt before checking anything secret: counted first,
	// it cannot be overtaken by attempts running at the same time. It
	// counts as a failure unless the login succeeds.
	reserved, err := s.Store.ReserveLoginAttempt(ctx, name, now, policy.MaxFailures, policy.LockoutFor)
	switch {
	case errors.Is(err, store.ErrLockedOut):
		// Rounded up: a caller told "0s" would retry at once and be
		// refused again, and Retry-After needs a whole second.
		wait := (reserved.LockedUntil.Sub(now) + time.Second - 1).Truncate(time.Second)
		if err := s.recordRefusal(ctx, ev(audit.Failure, "locked out after repeated failures")); err != nil {
			return nil, internal("record login failure", err)
		}
		return nil, &Error{Status: 429, Code: api.CodeLockedOut, RetryAfter: wait,
			Message: fmt.Sprintf("too many failed logins for %s: try again in %s", name, wait)}
	case err != nil:
		return nil, internal("reserve a login attempt", err)
	}

	// failed records a failed attempt, which its reservation already
	// counted, and the lockout when that reservation began one.
	failed := func(reason string) error {
		evs := []audit.Event{ev(audit.Failure, reason)}
		if reserved.Count >= policy.MaxFailures && reserved.LockedUntil.After(now) {
			s.log().Warn("login locked out after repeated failures", "user", name, "until", reserved.LockedUntil, "source", src)
			evs = append(evs, audit.Event{Time: now, Type: audit.LoginLockoutBegin, Actor: "system", Subject: name,
				Outcome: audit.Success, SourceIP: addrString(src),
				Reason:  fmt.Sprintf("%d consecutive failed logins", reserved.Count),
				Details: map[string]string{"until": reserved.LockedUntil.UTC().Format(time.RFC3339)}})
		}
		if _, err := s.Store.AppendAudits(ctx, evs); err != nil {
			return internal("record login failure", err)
		}
		return nil
	}
	// fail refuses the credentials with the one answer that says nothing.
	fail := func(reason string) error {
		if err := failed(reason); err != nil {
			return err
		}
		return ErrInvalidCredentials
	}

	u, err := s.Store.GetUser(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_ = s.Hasher.VerifyDummy(ctx, []byte(req.Password)) // for the time it takes
		return nil, fail("unknown user")
	case err != nil:
		return nil, internal("read user", err)
	}
	ok, rehash, err := s.Hasher.Verify(ctx, u.PasswordHash, []byte(req.Password))
	if err != nil {
		return nil, internal("verify password", err)
	}
	if !ok {
		return nil, fail("wrong password")
	}
	code, err := api.NormalizeCode(req.OTP)
	if err != nil {
		return nil, fail("malformed code")
	}
	secret, err := s.Sealer.Open(u.TOTPSecret, "totp/"+u.Name)
	if err != nil {
		return nil, internal("open TOTP secret", err)
	}
	step, ok, err := auth.MatchStep(string(secret), code, now)
	if err != nil {
		return nil, internal("check TOTP code", err)
	}
	if !ok {
		return nil, fail("wrong code")
	}

	// From here on the caller has proved the password and a current code,
	// so errors may say what is wrong. The attempt still counts as a
	// failure: only a certificate handed out releases the reservation, so
	// that no answer short of a login can reset the counter (a code that
	// matches but was used already, say).
	if u.Locked {
		if err := failed("user locked by an administrator"); err != nil {
			return nil, err
		}
		return nil, &Error{Status: 403, Code: api.CodeForbidden,
			Message: "your account is locked: ask an administrator to run tunnel admin users unlock " + u.Name}
	}
	grant, err := s.grantFrom(ctx, u, src)
	if err != nil {
		return nil, err
	}
	if grant.Refusal != "" {
		// Every role the user holds is limited to networks src is not in.
		if err := failed("outside the source networks of every role"); err != nil {
			return nil, err
		}
		return nil, &Error{Status: 403, Code: api.CodeForbidden, Message: grant.Refusal}
	}
	ttl, err := chooseTTL(time.Duration(req.TTL), grant.MaxTTL)
	if err != nil {
		if ferr := failed(err.Error()); ferr != nil {
			return nil, ferr
		}
		return nil, &Error{Status: 400, Code: api.CodeTTLTooLong, Message: err.Error()}
	}
	accepted, err := s.Store.AcceptTOTPStep(ctx, u.Name, step)
	if err != nil {
		return nil, internal("record TOTP step", err)
	}
	if !accepted {
		if err := failed("replayed code"); err != nil {
			return nil, err
		}
		return nil, &Error{Status: 401, Code: api.CodeReplayedCode,
			Message: "this code was already used: wait for the next code (at most 30 seconds) and log in again"}
	}

	resp, err := s.issue(ctx, u, grant, csr, sshKey, ttl, now, src)
	if err != nil {
		return nil, err
	}
	// The login succeeded: release the reservation (and any earlier
	// failures). If that fails, the attempt stays counted, which errs on
	// the safe side.
	if err := s.Store.ClearLoginFailures(ctx, u.Name); err != nil {
		s.log().Error("clear login failures", "user", u.Name, "err", err)
	}
	if rehash {
		s.rehash(ctx, u.Name, req.Password, now)
	}
	return resp, nil
}

// grant is what a user's roles add up to at login (access.LoginDecision).
type grant = access.LoginDecision

// access returns the decider (Access, or the Service's own).
func (s *Service) access() *access.Decider {
	s.accessOnce.Do(func() {
		if s.Access != nil {
			return
		}
		d := &access.Decider{Store: s.Store, Clock: s.Clock}
		if s.CA != nil {
			d.MaxTTL = s.CA.MaxTTL
		}
		s.Access = d
	})
	return s.Access
}

// Decider returns the access decider the Service uses.
func (s *Service) Decider() *access.Decider { return s.access() }

func (s *Service) grant(ctx context.Context, u store.User) (grant, error) {
	g, err := s.access().Login(ctx, u)
	if err != nil {
		return grant{}, internal("read roles", err)
	}
	return g, nil
}

// grantFrom is grant for a login from src: roles count only from their
// source networks (access.Decider.LoginFrom).
func (s *Service) grantFrom(ctx context.Context, u store.User, src netip.Addr) (grant, error) {
	g, err := s.access().LoginFrom(ctx, u, src)
	if err != nil {
		return grant{}, internal("read roles", err)
	}
	return g, nil
}

// GrantOfFrom is GrantOf for a caller connecting from src: roles whose
// source networks do not contain src do not count.
func (s *Service) GrantOfFrom(ctx context.Context, u store.User, src netip.Addr) (roles, logins []string, admin bool, err error) {
	g, err := s.grantFrom(ctx, u, src)
	return g.Roles, g.Logins, g.Admin, err
}

// GrantOf returns the logins and admin flag a user currently holds.
func (s *Service) GrantOf(ctx context.Context, u store.User) (logins []string, admin bool, err error) {
	g, err := s.grant(ctx, u)
	return g.Logins, g.Admin, err
}

// chooseTTL applies the default and refuses a TTL above the maximum rather
// than silently shortening what the user asked for.
func chooseTTL(asked, max time.Duration) (time.Duration, error) {
	if asked == 0 {
		return min(certs.DefaultUserTTL, max), nil
	}
	if asked > max {
		return 0, fmt.Errorf("requested TTL %s exceeds your maximum of %s: ask for less with --ttl", asked, max)
	}
	return asked, nil
}

func (s *Service) issue(ctx context.Context, u store.User, g grant, csr *x509.CertificateRequest, sshKey ssh.PublicKey, ttl time.Duration, now time.Time, src netip.Addr) (*api.LoginResponse, error) {
	id := identity.ID{Cluster: s.CA.Cluster(), Kind: identity.User, Name: u.Name}
	xc, err := s.CA.IssueX509Client(certs.X509Request{ID: id, PublicKey: csr.PublicKey, TTL: ttl, MaxTTL: g.MaxTTL})
	if err != nil {
		return nil, issueError(err)
	}
	records := []store.IssuedCert{{
		Serial: certs.X509SerialHex(xc), Kind: store.CertX509, Subject: u.Name, SubjectKind: identity.User,
		NotBefore: xc.NotBefore, NotAfter: xc.NotAfter, IssuedAt: now, Principals: []string{id.String()},
	}}
	events := []audit.Event{certEvent(now, u.Name, records[0], src, s.CA.Signer(records[0].Kind))}
	resp := &api.LoginResponse{
		User: u.Name, Roles: g.Roles, Logins: g.Logins, NotAfter: xc.NotAfter,
		X509Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: xc.Raw})),
		CA:              CABundle(s.CA),
	}
	if len(g.Logins) > 0 {
		sshTTL := ttl
		if !g.SSHNotAfter.IsZero() {
			// Some logins come only from access requests: the certificate
			// that carries them ends with their window.
			// (At least a second: certificates count whole seconds.)
			sshTTL = max(min(ttl, g.SSHNotAfter.Sub(now)), time.Second)
		}
		sc, err := s.CA.IssueSSHUser(certs.SSHUserRequest{
			User: u.Name, Principals: g.Logins, PublicKey: sshKey, TTL: sshTTL, MaxTTL: g.MaxTTL,
			// The roles' source networks, for a stock sshd to enforce.
			SourceAddresses: g.Sources,
		})
		if err != nil {
			return nil, issueError(err)
		}
		rec := store.IssuedCert{
			Serial: certs.SSHSerialHex(sc), Kind: store.CertSSHUser, Subject: u.Name, SubjectKind: identity.User,
			NotBefore: time.Unix(int64(sc.ValidAfter), 0), NotAfter: time.Unix(int64(sc.ValidBefore), 0),
			IssuedAt: now, Principals: slices.Clone(sc.ValidPrincipals),
		}
		records = append(records, rec)
		events = append(events, certEvent(now, u.Name, rec, src, s.CA.Signer(rec.Kind)))
		resp.SSHCertificate = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sc)))
		if sshTTL < ttl {
			resp.Warning = fmt.Sprintf("your SSH certificate ends at %s UTC, with the window of your access request: log in again after it for one without its logins",
				g.SSHNotAfter.UTC().Format("15:04:05"))
		}
	} else {
		resp.Warning = "your roles grant no SSH login, so no SSH certificate was issued"
	}
	if len(g.Outside) > 0 {
		names := make([]string, 0, len(g.Outside))
		for _, o := range g.Outside {
			names = append(names, o.Name)
		}
		what := "role " + names[0] + ", so this login does not carry it"
		if len(names) > 1 {
			what = "roles " + strings.Join(names, ", ") + ", so this login does not carry them"
		}
		w := fmt.Sprintf("you log in from %s, outside the source networks of %s", addrString(src), what)
		if resp.Warning != "" {
			w = resp.Warning + "; " + w
		}
		resp.Warning = w
	}
	events = append(events, audit.Event{Time: now, Type: audit.LoginSuccess, Actor: u.Name, Subject: u.Name,
		Outcome: audit.Success, SourceIP: addrString(src),
		Details: loginDetails(ttl, g)})
	if err := s.Store.RecordCertificates(ctx, records, events); err != nil {
		return nil, internal("record issued certificates", err)
	}
	return resp, nil
}

// certEvent is a certificate's audit event; signer names the key that
// signed it (certs.Authority.Signer: "local key", "vault key NAME version N").
func certEvent(now time.Time, user string, c store.IssuedCert, src netip.Addr, signer string) audit.Event {
	return audit.Event{Time: now, Type: audit.CertIssued, Actor: user, Subject: c.Serial,
		Outcome: audit.Success, SourceIP: addrString(src),
		Details: map[string]string{
			"kind": string(c.Kind), "principals": strings.Join(c.Principals, ","),
			"not_after": c.NotAfter.UTC().Format(time.RFC3339), "signer": signer,
		}}
}

func (s *Service) rehash(ctx context.Context, name, password string, now time.Time) {
	h, err := s.Hasher.Hash(ctx, []byte(password))
	if err != nil {
		s.log().Error("rehash password", "user", name, "err", err)
		return
	}
	ev := audit.Event{Time: now, Type: audit.PasswordRehashed, Actor: "system", Subject: name, Outcome: audit.Success}
	if err := s.Store.SetPasswordHash(ctx, name, h, ev); err != nil {
		s.log().Error("store rehashed password", "user", name, "err", err)
	}
}

func issueError(err error) error {
	switch {
	case errors.Is(err, certs.ErrTTLTooLong):
		return &Error{Status: 400, Code: api.CodeTTLTooLong, Message: err.Error()}
	case errors.Is(err, certs.ErrUnsupportedKey), errors.Is(err, certs.ErrInvalidRequest), errors.Is(err, certs.ErrNoPrincipals):
		return &Error{Status: 400, Code: api.CodeBadRequest, Message: err.Error()}
	}
	return internal("issue certificate", err)
}

func internal(op string, err error) error {
	return &Error{Status: 500, Code: api.CodeInternal,
		Message: "the gateway could not complete the login; no certificate was issued (see the gateway log)",
		cause:   fmt.Errorf("%s: %w", op, err)}
}

// parseKeys parses the CSR and the SSH key and checks they are one key pair.
func parseKeys(req api.LoginRequest) (*x509.CertificateRequest, ssh.PublicKey, error) {
	csr, err := certs.ParseCSR([]byte(req.CSR))
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	sshKey, err := certs.ParseSSHPublicKey([]byte(req.SSHPublicKey))
	if err != nil {
		return nil, nil, fmt.Errorf("ssh public key: %w", err)
	}
	fromCSR, err := ssh.NewPublicKey(csr.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	if string(fromCSR.Marshal()) != string(sshKey.Marshal()) {
		return nil, nil, errors.New("the certificate request and the SSH public key must be the same key pair")
	}
	return csr, sshKey, nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// CABundle returns the public trust anchors of the cluster.
func CABundle(ca *certs.Authority) api.CA {
	// The epoch is read first: a reload meanwhile gives newer keys under
	// it, never older ones under a newer label.
	b := api.CA{Epoch: ca.Epoch()}
	b.Cluster, b.Pin = ca.Cluster(), ca.Pin()
	for _, c := range ca.X509CAs() {
		b.X509 += string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	for _, k := range ca.SSHUserCAs() {
		b.SSHUserCAs = append(b.SSHUserCAs, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	}
	for _, k := range ca.SSHHostCAs() {
		b.SSHHostCAs = append(b.SSHHostCAs, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	}
	return b
}

// MinPasswordLen is the shortest password accepted for a user.
const MinPasswordLen = 12

// NewUser prepares a user record: the password hashed with argon2id and a
// new TOTP secret, sealed. It returns the record to store and the TOTP
// enrolment to show the user once.
func NewUser(ctx context.Context, h *auth.Hasher, sealer seal.Sealer, issuer, name, password string, roles []string, now time.Time) (store.User, api.Enrollment, error) {
	name = identity.CanonicalName(name)
	if err := identity.ValidateName("user", name); err != nil {
		return store.User{}, api.Enrollment{}, err
	}
	if err := CheckPassword(password); err != nil {
		return store.User{}, api.Enrollment{}, err
	}
	hash, err := h.Hash(ctx, []byte(password))
	if err != nil {
		return store.User{}, api.Enrollment{}, fmt.Errorf("hash password: %w", err)
	}
	u := store.User{Name: name, PasswordHash: hash, Roles: roles, CreatedAt: now}
	enr, err := NewTOTP(sealer, issuer, &u)
	if err != nil {
		return store.User{}, api.Enrollment{}, err
	}
	return u, enr, nil
}

// NewTOTP gives u a new sealed TOTP secret and returns its enrolment.
func NewTOTP(sealer seal.Sealer, issuer string, u *store.User) (api.Enrollment, error) {
	secret, uri, err := auth.NewSecret(issuer, u.Name, nil)
	if err != nil {
		return api.Enrollment{}, fmt.Errorf("make TOTP secret: %w", err)
	}
	sealed, err := sealer.Seal([]byte(secret), "totp/"+u.Name)
	if err != nil {
		return api.Enrollment{}, fmt.Errorf("seal TOTP secret: %w", err)
	}
	u.TOTPSecret = sealed
	u.TOTPLastStep = 0
	return api.Enrollment{User: u.Name, URI: uri, Secret: secret}, nil
}

// CheckPassword applies the password rules.
func CheckPassword(p string) error {
	switch {
	case len([]rune(p)) < MinPasswordLen:
		return fmt.Errorf("the password must be at least %d characters long", MinPasswordLen)
	case len(p) > 1024:
		return errors.New("the password must be at most 1024 bytes long")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// loginDetails are the details of a login.success event: the TTL, the
// roles, and the access requests whose roles the login carries.
func loginDetails(ttl time.Duration, g grant) map[string]string {
	d := map[string]string{"ttl": ttl.String(), "roles": strings.Join(g.Roles, ",")}
	if len(g.Grants) > 0 {
		var reqs []string
		for _, gr := range g.Grants {
			reqs = append(reqs, gr.Request+":"+gr.Role+" until "+gr.Until.UTC().Format(time.RFC3339))
		}
		d["requests"] = strings.Join(reqs, ",")
	}
	if len(g.Sources) > 0 {
		d["source_address"] = strings.Join(g.Sources, ",")
	}
	if len(g.Outside) > 0 {
		var out []string
		for _, o := range g.Outside {
			out = append(out, o.Name)
		}
		d["outside_roles"] = strings.Join(out, ",")
	}
	return d
}
