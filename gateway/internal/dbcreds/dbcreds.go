// Package dbcreds leases the database credentials the gateway hands to a
// database's agent, so that the application that connects through the
// tunnel never holds one (docs/DBCREDS.md).
//
// A service of an agent may name a path of Vault's database secrets
// engine (wire.Service.Credentials, "database/creds/orders-app"). For each
// stream to it the relay asks the Manager for a credential for the
// stream's (caller, node, service, path): the first stream leases one
// from Vault (a user Vault creates in the database, with a TTL); the
// streams that follow while it is in use share it. The Manager renews the
// lease while any stream uses it, and revokes it (Vault drops the user)
// a short grace after the last stream ended, at once when a stream of it
// was cut by a revocation or an access change, and when the caller or the
// database's agent is locked or removed (the Manager is a
// sessions.Killer). Close revokes every lease.
//
// Passwords are wire.Secret values: never logged, never in the audit log
// (each stream's event names the lease id instead).
package dbcreds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Credential is one leased database credential.
type Credential struct {
	LeaseID  string
	User     string
	Password wire.Secret
	// TTL is the lease's duration from when it was granted or renewed;
	// Renewable says whether Vault renews it.
	TTL       time.Duration
	Renewable bool
}

// Vault is what the Manager needs of Vault (VaultAPI over the real one).
type Vault interface {
	// Lease reads a database credential at path.
	Lease(ctx context.Context, path string) (Credential, error)
	// Renew extends a lease by increment and returns its new TTL.
	Renew(ctx context.Context, leaseID string, increment time.Duration) (time.Duration, error)
	// Revoke ends a lease: Vault drops the database user.
	Revoke(ctx context.Context, leaseID string) error
}

// Key is what a lease is for: a caller's streams to a node's service.
type Key struct {
	Caller  identity.ID
	Node    string
	Service string
	Path    string
}

// Defaults.
const (
	// DefaultGrace is how long an unused lease is kept for the caller's
	// next stream (connection pools open and close connections often).
	DefaultGrace = 30 * time.Second
	// DefaultMounts are the Vault mounts a service may name.
	DefaultMounts = "database"
	// callTimeout bounds one revocation or renewal.
	callTimeout = 30 * time.Second
)

// pathRE is MOUNT/creds/ROLE, each part Vault's characters.
var pathRE = regexp.MustCompile(`^([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*)/creds/([A-Za-z0-9_.-]+)$`)

// CheckPath checks that path reads a database credential (MOUNT/creds/ROLE)
// under one of mounts, and returns a sentence saying why not.
func CheckPath(path string, mounts []string) error {
	m := pathRE.FindStringSubmatch(path)
	if m == nil || len(path) > 255 {
		return fmt.Errorf("%q is not a Vault database credential path: use MOUNT/creds/ROLE, for example database/creds/orders-app", path)
	}
	for _, mt := range mounts {
		if m[1] == strings.Trim(mt, "/") {
			return nil
		}
	}
	return fmt.Errorf("Vault mount %q is not one this gateway leases database credentials from (--vault-db-mount: %s)", m[1], strings.Join(mounts, ", "))
}

// Manager leases, shares, renews and revokes credentials. Its zero value
// is not usable: set Vault. Close must be called.
type Manager struct {
	Vault Vault
	// Mounts are the Vault mounts services may name (DefaultMounts).
	Mounts []string
	// Grace is how long an unused lease is kept (DefaultGrace).
	Grace time.Duration
	Clock func() time.Time
	Log   *slog.Logger

	mu     sync.Mutex // guards leases and closed
	leases map[Key]*lease
	closed bool
	wg     sync.WaitGroup // renewal loops and revocations
}

// lease is one credential and the streams using it.
type lease struct {
	key   Key
	ready chan struct{} // closed once cred or err is set
	cred  Credential
	err   error
	refs  int
	// expires is when Vault ends it if not renewed.
	expires time.Time
	// done is closed when the lease is revoked or dropped: its renewal
	// loop ends.
	done     chan struct{}
	doneOnce sync.Once
	idle     *time.Timer // the grace timer while refs == 0
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
	return m.Log.With("component", "dbcreds")
}

func (m *Manager) grace() time.Duration {
	if m.Grace <= 0 {
		return DefaultGrace
	}
	return m.Grace
}

// MountList returns the mounts services may name.
func (m *Manager) MountList() []string {
	if len(m.Mounts) == 0 {
		return strings.Split(DefaultMounts, ",")
	}
	return m.Mounts
}

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("the gateway is shutting down")

// Acquire returns a credential for a stream of key, leasing one if no
// live lease of key is left. The stream calls the returned release when
// it ends: with revoke true (the stream was cut by a revocation or an
// access change) the lease is revoked at once, else a grace after its
// last stream.
func (m *Manager) Acquire(ctx context.Context, key Key) (Credential, func(revoke bool), error) {
	if err := CheckPath(key.Path, m.MountList()); err != nil {
		return Credential{}, nil, err
	}
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return Credential{}, nil, ErrClosed
		}
		if m.leases == nil {
			m.leases = map[Key]*lease{}
		}
		l, ok := m.leases[key]
		if !ok {
			l = &lease{key: key, ready: make(chan struct{}), done: make(chan struct{})}
			m.leases[key] = l
			l.refs++
			m.mu.Unlock()
			m.lease(ctx, l)
		} else {
			l.refs++
			if l.idle != nil {
				l.idle.Stop()
				l.idle = nil
			}
			m.mu.Unlock()
		}
		select {
		case <-l.ready:
		case <-ctx.Done():
			m.release(l, false)
			return Credential{}, nil, ctx.Err()
		}
		if l.err != nil {
			m.release(l, false)
			return Credential{}, nil, l.err
		}
		// A lease about to expire (renewal refused: its max TTL) is
		// dropped for new streams, which get a fresh one; the streams
		// using it keep their sessions.
		m.mu.Lock()
		stale := m.now().Add(m.minLeft(l)).After(l.expires)
		if stale && m.leases[key] == l {
			delete(m.leases, key)
		}
		m.mu.Unlock()
		if stale {
			m.release(l, false)
			continue
		}
		var once sync.Once
		return l.cred, func(revoke bool) { once.Do(func() { m.release(l, revoke) }) }, nil
	}
}

// minLeft is the least time a lease must have left for a new stream.
func (m *Manager) minLeft(l *lease) time.Duration {
	return l.cred.TTL / 10
}

// lease leases l's credential from Vault and starts its renewal loop.
func (m *Manager) lease(ctx context.Context, l *lease) {
	cred, err := m.Vault.Lease(ctx, l.key.Path)
	if err == nil && (cred.User == "" || cred.Password == "" || cred.LeaseID == "") {
		err = fmt.Errorf("Vault's answer at %s holds no username, password or lease: is it a database credential path?", l.key.Path)
		if cred.LeaseID != "" {
			m.revokeAsync(cred.LeaseID, l.key)
		}
	}
	m.mu.Lock()
	if err != nil {
		l.err = fmt.Errorf("cannot lease a database credential from Vault at %s: %w", l.key.Path, err)
		if m.leases[l.key] == l {
			delete(m.leases, l.key)
		}
		m.mu.Unlock()
		close(l.ready)
		return
	}
	dropped := m.closed
	select {
	case <-l.done:
		dropped = true // revoked (a lock) while Vault answered
	default:
	}
	if dropped {
		l.err = errors.New("the database credential was revoked as it was leased (access revoked, or the gateway is shutting down)")
		if m.leases[l.key] == l {
			delete(m.leases, l.key)
		}
		m.revokeAsyncLocked(cred.LeaseID, l.key)
		m.mu.Unlock()
		close(l.ready)
		return
	}
	l.cred = cred
	l.expires = m.now().Add(cred.TTL)
	m.wg.Add(1)
	m.mu.Unlock()
	close(l.ready)
	m.log().Info("database credential leased", "lease", cred.LeaseID, "user", cred.User, "ttl", cred.TTL,
		"caller", l.key.Caller.String(), "node", l.key.Node, "service", l.key.Service)
	go m.renewLoop(l)
}

// release ends one stream's use of l.
func (m *Manager) release(l *lease, revoke bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l.refs--
	if l.refs > 0 && !revoke {
		return
	}
	if revoke {
		m.dropLocked(l, "a stream using it was cut")
		return
	}
	if m.leases[l.key] != l {
		// Dropped for new streams already: the last stream is gone.
		m.dropLocked(l, "no stream uses it")
		return
	}
	if l.idle == nil && !m.closed {
		l.idle = time.AfterFunc(m.grace(), func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if l.refs == 0 && l.idle != nil {
				m.dropLocked(l, "unused")
			}
		})
	}
}

// dropLocked forgets l and revokes its lease once. m.mu is held.
func (m *Manager) dropLocked(l *lease, why string) {
	if m.leases[l.key] == l {
		delete(m.leases, l.key)
	}
	if l.idle != nil {
		l.idle.Stop()
		l.idle = nil
	}
	first := false
	l.doneOnce.Do(func() {
		first = true
		close(l.done)
	})
	select {
	case <-l.ready:
	default:
		return // still leasing: lease() sees done closed and revokes it
	}
	if first && l.err == nil && l.cred.LeaseID != "" {
		m.log().Info("revoking database credential", "lease", l.cred.LeaseID, "user", l.cred.User, "reason", why)
		m.revokeAsyncLocked(l.cred.LeaseID, l.key)
	}
}

func (m *Manager) revokeAsync(id string, key Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revokeAsyncLocked(id, key)
}

func (m *Manager) revokeAsyncLocked(id string, key Key) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer panics.Recover(m.log(), "revoke a database credential", nil)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := m.Vault.Revoke(ctx, id); err != nil {
			m.log().Error("revoke a database credential; Vault ends it at its TTL", "lease", id, "node", key.Node, "service", key.Service, "err", err)
		}
	}()
}

// renewLoop renews l at half its remaining TTL until it is dropped.
func (m *Manager) renewLoop(l *lease) {
	defer m.wg.Done()
	defer panics.Recover(m.log(), "renew a database credential", nil)
	ttl := l.cred.TTL
	for {
		wait := ttl / 2
		switch {
		case ttl <= 0:
			wait = time.Minute // no TTL said: check again later
		case wait < time.Second:
			wait = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-l.done:
			t.Stop()
			return
		case <-t.C:
		}
		if !l.cred.Renewable {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		nttl, err := m.Vault.Renew(ctx, l.cred.LeaseID, l.cred.TTL)
		cancel()
		if err != nil {
			m.log().Warn("renew a database credential; retrying", "lease", l.cred.LeaseID, "err", err)
			ttl = time.Until(l.expires)
			if ttl <= 0 {
				ttl = 2 * time.Second
			}
			continue
		}
		m.mu.Lock()
		l.expires = m.now().Add(nttl)
		m.mu.Unlock()
		ttl = nttl
		m.log().Debug("database credential renewed", "lease", l.cred.LeaseID, "ttl", nttl)
	}
}

// Count returns the leases held now (for tests and metrics).
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.leases)
}

// revokeWhere revokes every lease whose key matches f.
func (m *Manager) revokeWhere(why string, f func(Key) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, l := range m.leases {
		if f(k) {
			m.dropLocked(l, why)
		}
	}
}

// EndUser implements sessions.Killer: the user's leases are revoked.
func (m *Manager) EndUser(name, reason string) {
	m.revokeWhere("user "+name+": "+reason, func(k Key) bool {
		return k.Caller.Kind == identity.User && k.Caller.Name == name
	})
}

// EndAgent implements sessions.Killer: the leases of the agent's streams,
// as caller or as the database's agent, are revoked.
func (m *Manager) EndAgent(name, reason string) {
	m.revokeWhere("agent "+name+": "+reason, func(k Key) bool {
		return k.Caller.Kind == identity.Agent && k.Caller.Name == name || k.Node == name
	})
}

// EndSession implements sessions.Killer: SSH sessions hold no lease.
func (m *Manager) EndSession(store.Session, string) {}

// Close revokes every lease and waits for the revocations. Safe twice.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for _, l := range m.leases {
		m.dropLocked(l, "the gateway is shutting down")
	}
	m.mu.Unlock()
	m.wg.Wait()
}
