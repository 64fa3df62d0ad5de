// Package sessions grants, times and revokes bastion sessions, and carries
// out revocations of live access.
//
// A session is a grant (user, node, login, start, deadline) with an SSH
// certificate for exactly it. The Manager keeps a timer per active session
// and ends it at its deadline; Revoke ends it at once. Both tell the Killer
// (the relay), which closes the live streams and tells the node's agent to
// close the SSH connection with the reason ("session expired", "access
// revoked by an administrator").
//
// Users and agents are revoked alike, with one difference: a locked user's
// certificates go on the deny list (store.RevokeCertificates, for that user
// only, never an agent of the same name), so that unlocking does not bring
// them back, while a locked agent keeps its certificates, refused by the
// lock itself on every connection, enrolment and renewal, so that it comes
// back by itself once unlocked. Either way their sessions end and their live
// streams and connections are closed, by every Killer registered.
package sessions

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Reasons shown to users.
const (
	ReasonExpired = "session expired"
	ReasonRevoked = "access revoked by an administrator"
)

// Killer closes live access; the relay implements it.
type Killer interface {
	// EndSession closes the streams of a session and tells its node.
	EndSession(s store.Session, reason string)
	// EndUser closes every stream and connection of a user.
	EndUser(name, reason string)
	// EndAgent closes an agent's connection and every stream through it.
	EndAgent(name, reason string)
}

// Manager grants and ends sessions. Start must be called before use;
// Close stops its timers.
type Manager struct {
	Store store.Store
	CA    *certs.Authority
	// Killer is told first; more can be added with AddKiller (the jump
	// host, which holds SSH connections of its own).
	Killer Killer
	Clock  func() time.Time
	Log    *slog.Logger
	// Access decides what a user's roles allow on a node; nil means one
	// of the Manager's own over Store and CA.
	Access     *access.Decider
	accessOnce sync.Once

	mu     sync.Mutex // guards timers and closed
	timers map[string]*time.Timer
	closed bool
	wg     sync.WaitGroup // running timer callbacks

	kmu     sync.Mutex // guards killers and nextKey
	killers map[int]Killer
	nextKey int
}

// AddKiller registers k to be told, like Killer, of every session, user
// and agent whose live access ends. The returned func unregisters it.
func (m *Manager) AddKiller(k Killer) (remove func()) {
	m.kmu.Lock()
	defer m.kmu.Unlock()
	if m.killers == nil {
		m.killers = map[int]Killer{}
	}
	key := m.nextKey
	m.nextKey++
	m.killers[key] = k
	return func() {
		m.kmu.Lock()
		defer m.kmu.Unlock()
		delete(m.killers, key)
	}
}

// each calls f for Killer and every killer added.
func (m *Manager) each(f func(Killer)) {
	m.kmu.Lock()
	ks := make([]Killer, 0, len(m.killers)+1)
	if m.Killer != nil {
		ks = append(ks, m.Killer)
	}
	for _, k := range m.killers {
		ks = append(ks, k)
	}
	m.kmu.Unlock()
	for _, k := range ks {
		f(k)
	}
}

func (m *Manager) now() time.Time {
	if m.Clock == nil {
		return time.Now()
	}
	return m.Clock()
}

func (m *Manager) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

// Start schedules the deadlines of the sessions still active, ending at
// once those whose deadline passed while the gateway was down.
func (m *Manager) Start(ctx context.Context) error {
	active, err := m.Store.ListSessions(ctx, store.SessionFilter{ActiveOnly: true})
	if err != nil {
		return fmt.Errorf("load active sessions: %w", err)
	}
	for _, s := range active {
		m.schedule(s)
	}
	return nil
}

// Close stops every timer and waits for callbacks in flight. Safe twice.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for id, t := range m.timers {
		t.Stop()
		delete(m.timers, id)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *Manager) schedule(s store.Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if m.timers == nil {
		m.timers = map[string]*time.Timer{}
	}
	id := s.ID
	m.timers[id] = time.AfterFunc(time.Until(s.Deadline), func() {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return
		}
		delete(m.timers, id)
		m.wg.Add(1)
		m.mu.Unlock()
		defer m.wg.Done()
		m.end(context.Background(), id, store.SessionExpired, ReasonExpired, "system")
	})
}

func (m *Manager) unschedule(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.timers[id]; ok {
		t.Stop()
		delete(m.timers, id)
	}
}

// Error is a refusal to show the caller, with an HTTP status.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

func refuse(status int, format string, a ...any) error {
	return &Error{Status: status, Message: fmt.Sprintf(format, a...)}
}

// access returns the decider (Access, or the Manager's own).
func (m *Manager) access() *access.Decider {
	m.accessOnce.Do(func() {
		if m.Access != nil {
			return
		}
		d := &access.Decider{Store: m.Store, Clock: m.Clock, Log: m.Log}
		if m.CA != nil {
			d.MaxTTL = m.CA.MaxTTL
		}
		m.Access = d
	})
	return m.Access
}

// Grant is what a user's roles allow on one node (access.SSHDecision).
type Grant = access.SSHDecision

// GrantOn returns the logins u may use on node and the longest session:
// access.Decider.SSH.
func (m *Manager) GrantOn(ctx context.Context, u store.User, node string) (Grant, error) {
	return m.access().SSH(ctx, u, node)
}

// CreateUntil grants u a session for req, from src, and returns it with
// its certificate. loginNotAfter is the expiry of the login certificate the
// caller authenticated with: the session never outlives it (the default
// length is shortened to fit; a length asked for with --ttl that does not
// fit is refused). A zero loginNotAfter means unknown (no cap).
func (m *Manager) CreateUntil(ctx context.Context, u store.User, req api.CreateSessionRequest, src string, loginNotAfter time.Time) (*api.SessionGrant, error) {
	node := identity.CanonicalName(req.Node)
	if err := identity.ValidateName("node", node); err != nil {
		return nil, refuse(400, "%v", err)
	}
	if _, err := m.Store.GetAgent(ctx, node); errors.Is(err, store.ErrNotFound) {
		return nil, refuse(404, "no node named %s is enrolled (tunnel ls shows the nodes you may reach)", node)
	} else if err != nil {
		return nil, err
	}
	key, err := certs.ParseSSHPublicKey([]byte(req.SSHPublicKey))
	if err != nil {
		return nil, refuse(400, "ssh public key: %v", err)
	}
	g, err := m.access().SSHFrom(ctx, u, node, access.ParseAddr(src))
	if err != nil {
		return nil, err
	}
	if g.SourceRefused(req.Login) {
		return nil, m.deny(ctx, u.Name, node, req.Login, src, refuse(403, "%s", access.SourceRefusal(access.ParseAddr(src), g.Outside)))
	}
	if len(g.Logins) == 0 {
		return nil, m.deny(ctx, u.Name, node, req.Login, src, refuse(403, "none of your roles allows %s: ask an admin for a role with --node %s", node, node))
	}
	if !slices.Contains(g.Logins, req.Login) {
		return nil, m.deny(ctx, u.Name, node, req.Login, src, refuse(403, "your roles do not allow login %q on %s; they allow %s", req.Login, node, strings.Join(g.Logins, ", ")))
	}
	ttl, err := sessionTTL(time.Duration(req.TTL), g.MaxTTL, node, m.now(), loginNotAfter)
	if err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	cert, err := m.CA.IssueSSHUser(certs.SSHUserRequest{
		User: u.Name, Principals: []string{req.Login}, PublicKey: key, TTL: ttl, MaxTTL: g.MaxTTL,
		SessionID: id, Permissions: &certs.SSHPermissions{PTY: true, PortForwarding: g.PortForwarding, AgentForwarding: g.AgentForwarding},
	})
	if err != nil {
		return nil, fmt.Errorf("issue session certificate: %w", err)
	}
	now := m.now()
	s := store.Session{ID: id, User: u.Name, Node: node, Login: req.Login, CreatedAt: now,
		Deadline: time.Unix(int64(cert.ValidBefore), 0), State: store.SessionActive, SourceIP: src,
		CertSerial: certs.SSHSerialHex(cert)}
	rec := store.IssuedCert{Serial: s.CertSerial, Kind: store.CertSSHUser, Subject: u.Name, SubjectKind: identity.User,
		NotBefore: time.Unix(int64(cert.ValidAfter), 0), NotAfter: s.Deadline, IssuedAt: now, Principals: []string{req.Login}}
	details := map[string]string{"node": node, "login": req.Login, "deadline": s.Deadline.UTC().Format(time.RFC3339)}
	if g.Sudo {
		details["sudo"] = "true"
	}
	evs := []audit.Event{
		{Time: now, Type: audit.SessionCreated, Actor: u.Name, Subject: id, Outcome: audit.Success, SourceIP: src,
			Details: details},
		{Time: now, Type: audit.CertIssued, Actor: u.Name, Subject: rec.Serial, Outcome: audit.Success, SourceIP: src,
			Details: map[string]string{"kind": string(rec.Kind), "principals": req.Login, "session": id, "signer": m.CA.Signer(rec.Kind)}},
	}
	if err := m.Store.CreateSession(ctx, s, []store.IssuedCert{rec}, evs); err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, refuse(403, "%v", err)
		}
		return nil, fmt.Errorf("record session: %w", err)
	}
	m.schedule(s)
	grant := &api.SessionGrant{Session: ToAPI(s), SSHCertificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))}
	for _, k := range m.CA.SSHHostCAs() {
		grant.SSHHostCAs = append(grant.SSHHostCAs, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	}
	m.log().Info("session created", "session", id, "user", u.Name, "node", node, "login", req.Login, "deadline", s.Deadline)
	return grant, nil
}

// sessionTTL is the length of a session: asked (0 for the default), at
// most the roles' maximum for node, and ending no later than loginNotAfter
// (zero: unknown). The certificate's validity is counted in whole seconds
// from the CA's clock, so a second is kept in hand below the login's end.
func sessionTTL(asked, maxTTL time.Duration, node string, now, loginNotAfter time.Time) (time.Duration, error) {
	left := time.Duration(1<<63 - 1)
	if !loginNotAfter.IsZero() {
		left = loginNotAfter.Sub(now).Truncate(time.Second) - time.Second
		if left <= 0 {
			return 0, refuse(401, "your login has expired: run tunnel login")
		}
	}
	switch {
	case asked < 0:
		return 0, refuse(400, "the session length must not be negative")
	case asked == 0:
		return min(certs.DefaultUserTTL, maxTTL, left), nil
	case asked > maxTTL:
		return 0, refuse(400, "a session of %s is longer than your roles allow on %s (%s): ask for less with --ttl", asked, node, maxTTL)
	case asked > left:
		return 0, refuse(400, "a session of %s would outlive your login, which ends at %s UTC (in %s): ask for less with --ttl, or run tunnel login --ttl for a longer login",
			asked, loginNotAfter.UTC().Format("15:04:05"), loginNotAfter.Sub(now).Round(time.Second))
	}
	return asked, nil
}

// OpenForJump opens a session for a user who connects with plain OpenSSH
// through the jump host, with only their login certificate: it ends when
// that certificate does, capped by the role. logins are those the node may
// accept (the login is chosen inside the end-to-end SSH connection).
//
// The roles count only from their source networks: logins that only roles
// outside src allow are dropped, and if none is left the session is
// refused with a sentence naming the source and the roles.
func (m *Manager) OpenForJump(ctx context.Context, u store.User, node string, logins []string, certSerial string, certExpiry time.Time, src string) (store.Session, error) {
	g, err := m.access().SSHFrom(ctx, u, node, access.ParseAddr(src))
	if err != nil {
		return store.Session{}, err
	}
	asked := len(logins)
	logins = slices.DeleteFunc(slices.Clone(logins), func(l string) bool { return !g.AllowsLogin(l) })
	if asked > 0 && len(logins) == 0 && len(g.Outside) > 0 {
		return store.Session{}, m.deny(ctx, u.Name, node, "", src, refuse(403, "%s", access.SourceRefusal(access.ParseAddr(src), g.Outside)))
	}
	if len(logins) == 0 {
		return store.Session{}, m.deny(ctx, u.Name, node, "", src, refuse(403, "your roles do not allow %s", node))
	}
	now := m.now()
	deadline := now.Add(g.MaxTTL)
	if certExpiry.Before(deadline) {
		deadline = certExpiry
	}
	if !deadline.After(now) {
		return store.Session{}, refuse(401, "your certificate has expired: run tunnel login")
	}
	id, err := newID()
	if err != nil {
		return store.Session{}, err
	}
	login := strings.Join(logins, ",")
	s := store.Session{ID: id, User: u.Name, Node: node, Login: login, CreatedAt: now, Deadline: deadline,
		State: store.SessionActive, SourceIP: src, CertSerial: certSerial}
	ev := audit.Event{Time: now, Type: audit.SessionCreated, Actor: u.Name, Subject: id, Outcome: audit.Success, SourceIP: src,
		Details: map[string]string{"node": node, "logins": login, "deadline": deadline.UTC().Format(time.RFC3339), "via": "jump host"}}
	if g.Sudo {
		ev.Details["sudo"] = "true"
	}
	if err := m.Store.CreateSession(ctx, s, nil, []audit.Event{ev}); err != nil {
		if errors.Is(err, store.ErrLocked) {
			return store.Session{}, refuse(403, "%v", err)
		}
		return store.Session{}, fmt.Errorf("record session: %w", err)
	}
	m.schedule(s)
	return s, nil
}

func (m *Manager) deny(ctx context.Context, user, node, login, src string, err error) error {
	if aerr := m.access().RecordSSHDenial(ctx, user, node, login, src, err.Error()); aerr != nil {
		return aerr
	}
	return err
}

// Forwarding says whether the user's roles allow port and agent
// forwarding on node (for the node's SSH endpoint), from the sources of
// the user's live sessions there (live).
func (m *Manager) Forwarding(ctx context.Context, user, node string) (port, agent bool, err error) {
	g, err := m.live(ctx, user, node)
	return g.PortForwarding, g.AgentForwarding, err
}

// Sudo says whether the user's roles let the session's login use sudo on
// node for the session's length (the "sudo" permit of the stream header,
// which the node's SSH endpoint honours with a sudoers drop-in), from the
// sources of the user's live sessions there (live).
func (m *Manager) Sudo(ctx context.Context, user, node string) (bool, error) {
	g, err := m.live(ctx, user, node)
	return g.Sudo, err
}

// live is what the user's roles allow on node for their active sessions
// there, each decided from its own source address (roles count only from
// their source networks): a permission holds only if it holds for every
// one of them. The relay asks by user and node, not by session, so this
// errs on the side of less. With no active session, the source is unknown
// and only roles without source networks count.
func (m *Manager) live(ctx context.Context, user, node string) (Grant, error) {
	u, err := m.Store.GetUser(ctx, user)
	if err != nil {
		return Grant{}, err
	}
	active, err := m.Store.ListSessions(ctx, store.SessionFilter{User: user, Node: node, ActiveOnly: true})
	if err != nil {
		return Grant{}, fmt.Errorf("list the sessions of %s on %s: %w", user, node, err)
	}
	srcs := []string{""}
	if len(active) > 0 {
		srcs = srcs[:0]
		for _, s := range active {
			if !slices.Contains(srcs, s.SourceIP) {
				srcs = append(srcs, s.SourceIP)
			}
		}
	}
	var out Grant
	for i, src := range srcs {
		g, err := m.access().SSHFrom(ctx, u, node, access.ParseAddr(src))
		if err != nil {
			return Grant{}, err
		}
		if i == 0 {
			out = g
			continue
		}
		out.PortForwarding = out.PortForwarding && g.PortForwarding
		out.AgentForwarding = out.AgentForwarding && g.AgentForwarding
		out.Sudo = out.Sudo && g.Sudo
	}
	return out, nil
}

// Check returns the session id if it may carry a new stream for user to
// node now.
func (m *Manager) Check(ctx context.Context, user, node, id string) (store.Session, error) {
	s, err := m.Store.GetSession(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Session{}, errors.New("unknown session: run tunnel ssh again")
	case err != nil:
		return store.Session{}, err
	case s.User != user || s.Node != node:
		return store.Session{}, errors.New("this session belongs to another user or node")
	case s.State != store.SessionActive:
		return store.Session{}, fmt.Errorf("this session has ended (%s)", s.EndReason)
	case !m.now().Before(s.Deadline):
		return store.Session{}, errors.New(ReasonExpired)
	}
	return s, nil
}

// Closed ends a session because its client went away (no-op if it ended).
func (m *Manager) Closed(ctx context.Context, id string) {
	m.end(ctx, id, store.SessionClosed, "closed by the client", "system")
}

// Unreached ends a session whose stream could not reach its node (the
// agent is offline or does not answer), with the reason its user was
// given: nothing else would end it before its deadline, since the client
// gives up. No-op if it ended.
func (m *Manager) Unreached(ctx context.Context, id, reason string) {
	m.end(ctx, id, store.SessionClosed, reason, "system")
}

// Revoke ends a session at once and revokes the certificate it was opened
// with, so that it opens nothing more: a session certificate (tunnel ssh)
// or, for a session opened through the jump host, the login certificate
// the jump connection holds (its user logs in again).
func (m *Manager) Revoke(ctx context.Context, id, actor string) (store.Session, error) {
	s, err := m.Store.GetSession(ctx, id)
	if err != nil {
		return store.Session{}, err
	}
	if s.State != store.SessionActive {
		return s, refuse(409, "session %s already ended (%s)", id, s.EndReason)
	}
	if s.CertSerial != "" {
		now := m.now()
		ev := audit.Event{Time: now, Type: audit.CertRevoked, Actor: actor, Subject: s.CertSerial, Outcome: audit.Success,
			Reason: "session revoked", Details: map[string]string{"session": id, "user": s.User, "kind": string(store.CertSSHUser)}}
		_, err := m.Store.RevokeCertificates(ctx, store.RevokeFilter{Serial: s.CertSerial, Kind: store.CertSSHUser}, now, ev)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.Session{}, fmt.Errorf("revoke the certificate of session %s: %w", id, err)
		}
	}
	return m.end(ctx, id, store.SessionRevoked, ReasonRevoked, actor), nil
}

// end ends an active session in state and closes its live access.
func (m *Manager) end(ctx context.Context, id string, state store.SessionState, reason, actor string) store.Session {
	m.unschedule(id)
	typ := audit.SessionEnded
	if state == store.SessionRevoked {
		typ = audit.SessionRevoked
	}
	ev := audit.Event{Time: m.now(), Type: typ, Actor: actor, Subject: id, Outcome: audit.Success, Reason: reason}
	before, gerr := m.Store.GetSession(ctx, id)
	if gerr == nil && before.State != store.SessionActive {
		return before // already ended: nothing to tell anyone again
	}
	s, err := m.Store.EndSession(ctx, id, state, reason, m.now(), ev)
	if err != nil {
		m.log().Error("end session", "session", id, "err", err)
	}
	if s.ID == "" {
		s = store.Session{ID: id}
	}
	if err == nil && s.State != state {
		return s // another end won the race
	}
	m.each(func(k Killer) { k.EndSession(s, reason) })
	m.log().Info("session ended", "session", id, "state", state, "reason", reason)
	return s
}

// EndChanged implements access.SessionEnder: it ends an active session
// that a change of roles no longer allows, with reason, which the user
// sees. Its certificate is left alone: the session it names has ended, so
// it opens nothing more (and a jump host session holds the user's login
// certificate, which other access still needs).
func (m *Manager) EndChanged(ctx context.Context, s store.Session, reason string) {
	m.end(ctx, s.ID, store.SessionRevoked, reason, "system")
}

// RevokeUser ends every active session of a user, puts the user's
// certificates (the user's only, not those of an agent of the same name)
// on the deny list, and closes their live streams and connections. The
// caller has locked or is removing the user. The certificates stay revoked
// after an unlock: the user logs in again.
func (m *Manager) RevokeUser(ctx context.Context, name, actor string) error {
	now := m.now()
	ev := audit.Event{Time: now, Type: audit.CertRevoked, Actor: actor, Subject: name, Outcome: audit.Success, Reason: "user locked",
		Details: map[string]string{"subject_kind": string(identity.User)}}
	if _, err := m.Store.RevokeCertificates(ctx, store.RevokeFilter{Subject: name, SubjectKind: identity.User}, now, ev); err != nil {
		return fmt.Errorf("revoke certificates of user %s: %w", name, err)
	}
	active, err := m.Store.ListSessions(ctx, store.SessionFilter{User: name, ActiveOnly: true})
	if err != nil {
		return err
	}
	for _, s := range active {
		m.end(ctx, s.ID, store.SessionRevoked, ReasonRevoked, actor)
	}
	m.each(func(k Killer) { k.EndUser(name, ReasonRevoked) })
	return nil
}

// RevokeAgent ends the sessions on an agent's node and closes its
// connection and streams. The caller has locked it. Its certificates are
// not revoked: the lock refuses them on every connection, enrolment and
// renewal, and once unlocked the agent reconnects by itself with them.
func (m *Manager) RevokeAgent(ctx context.Context, name, actor string) error {
	active, err := m.Store.ListSessions(ctx, store.SessionFilter{Node: name, ActiveOnly: true})
	if err != nil {
		return err
	}
	for _, s := range active {
		m.end(ctx, s.ID, store.SessionRevoked, ReasonRevoked, actor)
	}
	m.each(func(k Killer) { k.EndAgent(name, ReasonRevoked) })
	return nil
}

// ToAPI converts a session for the API.
func ToAPI(s store.Session) api.Session {
	out := api.Session{ID: s.ID, User: s.User, Node: s.Node, Login: s.Login, CreatedAt: s.CreatedAt,
		Deadline: s.Deadline, State: string(s.State), EndReason: s.EndReason, BytesIn: s.BytesIn,
		BytesOut: s.BytesOut, SourceIP: s.SourceIP, Recording: s.Recording}
	if !s.EndedAt.IsZero() {
		t := s.EndedAt
		out.EndedAt = &t
	}
	return out
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func newID() (string, error) {
	b := make([]byte, 15)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return strings.ToLower(idEncoding.EncodeToString(b)), nil
}
