package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// fanout carries out, on this gateway, the changes other gateways commit to
// the shared store (store.Store.Watch): what a change made here does to
// local live access, without writing the store or the audit log again
// (the gateway that made the change did):
//
//   - a session ended elsewhere: its streams here are closed and its node
//     told (sessions.Killer.EndSession); a session created elsewhere: its
//     deadline is scheduled here too, so that it is enforced even if the
//     gateway that created it dies (the store's EndSession is idempotent:
//     whichever gateway ends it first writes the one audit event);
//   - a user locked or removed: their streams and connections here are
//     closed (EndUser); an agent locked: its connection here (EndAgent);
//   - a certificate revoked (an agent enrolled again, a session or a user
//     revoked): every live QUIC connection and jump host connection here
//     that was authenticated with it is closed (certEnder.EndCerts), the
//     streams on it with it, whoever holds the name now;
//   - a policy rule, a role or a user's roles changed: every live session
//     and stream here is re-evaluated (access re-evaluation, which reloads
//     the policy first).
//
// Changes this gateway made (Origin == its id) were carried out when they
// were made, and are skipped, except a certificate's revocation (closing
// by certificate is idempotent, and its callers close by name) and the
// CA and request changes. A Resync (changes may have been missed), and
// a sweep every ReconcileInterval as a safety net, reconcile: close what
// belongs to locked users and agents and to sessions ended lately, and
// schedule every active session's deadline, and close what revoked
// certificates still hold open here; a Resync also re-evaluates.
// The mechanism is the push of changes; the sweep costs a few queries per
// interval per gateway, never per agent or session.
type fanout struct {
	self  string
	store store.Store
	// killers close live access here: the relay and the jump host.
	killers []sessions.Killer
	// reevaluate re-evaluates every live session and stream against the
	// current roles and rules, reloading the policy first.
	reevaluate func(ctx context.Context) error
	interval   time.Duration // of the reconciliation sweep
	clock      func() time.Time
	log        *slog.Logger

	mu     sync.Mutex // guards timers and closed
	timers map[string]*time.Timer
	// expired are the sessions this gateway ended at their deadline, with
	// when: a change read just before the end must not schedule them again
	// (kept for expiredMemory).
	expired  map[string]time.Time
	closed   bool
	timersWG sync.WaitGroup
	// lastSweep bounds the sessions a sweep looks at.
	lastSweep time.Time
	// requests are the end timers of access requests (fanout_requests.go).
	requests requestTimers

	// network reads the network rules again and applies them to this
	// gateway's listeners (netacl.go); nil means none.
	network func(ctx context.Context) error

	// ca reloads the CA keys from the store if they changed (a CA
	// rotation, carotation.go); nil means none.
	ca func(ctx context.Context) error
}

// run applies the changes of ch until it closes or ctx ends, and sweeps
// every interval.
func (f *fanout) run(ctx context.Context, ch <-chan store.Change) {
	defer f.stop()
	f.lastSweep = f.clock()
	f.scheduleRequests(ctx)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-ch:
			if !ok {
				return
			}
			if c.Kind == store.ChangeCert {
				// A lock or re-enrolment revokes many certificates at
				// once: the changes already delivered are closed in one
				// pass over the connections, not one pass each.
				batch, next, open := drainCerts(c, ch)
				f.applyCerts(batch)
				if next != nil {
					f.apply(ctx, *next)
				}
				if !open {
					return
				}
				continue
			}
			f.apply(ctx, c)
		case <-t.C:
			f.reconcile(ctx, false)
		}
	}
}

// apply carries out one change.
func (f *fanout) apply(ctx context.Context, c store.Change) {
	defer panics.Recover(f.log, "apply a change from another gateway", nil)
	if c.Kind == store.ChangeCA {
		f.applyCA(ctx) // this gateway's own too: reloading is idempotent
		return
	}
	if c.Kind == store.ChangeRequest {
		f.applyRequest(ctx, c) // this gateway's own too: it schedules the window's end
		return
	}
	if c.Kind == store.ChangeCert {
		// This gateway's own too: the caller that revoked closed what the
		// revocation names by user, agent or session, and EndCerts is
		// idempotent, so a connection of the certificate that escaped that
		// (another path, a race with a reconnection) is closed here.
		f.applyCert(c)
		return
	}
	if c.Kind != store.ChangeResync && c.Origin == f.self {
		return
	}
	f.log.Debug("change from another gateway", "kind", c.Kind, "id", c.ID, "origin", c.Origin)
	switch c.Kind {
	case store.ChangeSession:
		s, err := f.store.GetSession(ctx, c.ID)
		if err != nil {
			f.warn(c, err)
			return
		}
		if s.State == store.SessionActive {
			f.schedule(s)
			return
		}
		f.unschedule(s.ID)
		if f.expiredHere(s.ID) {
			return // this gateway's deadline timer ended it and closes it here
		}
		f.endSession(s)
	case store.ChangeUser:
		u, err := f.store.GetUser(ctx, c.ID)
		switch {
		case errors.Is(err, store.ErrNotFound) || err == nil && u.Locked:
			for _, k := range f.killers {
				k.EndUser(c.ID, sessions.ReasonRevoked)
			}
		case err != nil:
			f.warn(c, err)
			return
		}
		f.reeval(ctx) // the user's roles may have changed
	case store.ChangeAgent:
		a, err := f.store.GetAgent(ctx, c.ID)
		switch {
		case err == nil && a.Locked:
			for _, k := range f.killers {
				k.EndAgent(c.ID, sessions.ReasonRevoked)
			}
		case err != nil && !errors.Is(err, store.ErrNotFound):
			f.warn(c, err)
		}
	case store.ChangeRole, store.ChangePolicy:
		f.reeval(ctx)
	case store.ChangeNetwork:
		f.applyNetwork(ctx)
	case store.ChangeResync:
		f.reconcile(ctx, true)
	}
}

// applyCert closes what runs here on the certificate a ChangeCert names.
func (f *fanout) applyCert(c store.Change) { f.applyCerts([]store.Change{c}) }

// maxCertBatch bounds the certificate changes closed in one pass.
const maxCertBatch = 1024

// drainCerts returns first and the certificate changes delivered on ch
// right after it (without waiting, at most maxCertBatch in all), the
// first other change it read (nil if none), and whether ch is still open.
func drainCerts(first store.Change, ch <-chan store.Change) (batch []store.Change, next *store.Change, open bool) {
	batch = []store.Change{first}
	for len(batch) < maxCertBatch {
		select {
		case c, ok := <-ch:
			if !ok {
				return batch, nil, false
			}
			if c.Kind != store.ChangeCert {
				return batch, &c, true
			}
			batch = append(batch, c)
		default:
			return batch, nil, true
		}
	}
	return batch, nil, true
}

// applyCerts closes what runs here on the certificates ChangeCerts name,
// in one pass (this gateway's own changes too: see apply).
func (f *fanout) applyCerts(cs []store.Change) {
	defer panics.Recover(f.log, "apply certificate revocations", nil)
	revoked := make([]store.IssuedCert, 0, len(cs))
	for _, c := range cs {
		kind, serial, ok := store.ParseCertChangeID(c.ID)
		if !ok {
			f.log.Warn("a certificate change names no certificate; the next reconciliation closes what it should", "id", c.ID, "origin", c.Origin)
			continue
		}
		revoked = append(revoked, store.IssuedCert{Kind: kind, Serial: serial, Subject: c.Subject})
	}
	f.endCerts(revoked)
}

func (f *fanout) warn(c store.Change, err error) {
	if !errors.Is(err, store.ErrNotFound) {
		f.log.Warn("could not apply a change from another gateway; the next reconciliation will", "kind", c.Kind, "id", c.ID, "err", storeError(err))
	}
}

func (f *fanout) reeval(ctx context.Context) {
	if f.reevaluate == nil {
		return
	}
	if err := f.reevaluate(ctx); err != nil {
		f.log.Warn("re-evaluate live access after a change from another gateway", "err", storeError(err))
	}
}

// applyNetwork applies the network rules again (a change, a Resync, the
// sweep: one query).
func (f *fanout) applyNetwork(ctx context.Context) {
	if f.network == nil {
		return
	}
	if err := f.network(ctx); err != nil {
		f.log.Warn("apply the network rules after a change; the next reconciliation retries", "err", storeError(err))
	}
}

// certEnder is a killer that can also close the live connections
// authenticated with given certificates: the relay (QUIC connections of
// agents and users, by X.509 serial) and the jump host (SSH connections,
// by SSH certificate serial).
type certEnder interface {
	EndCerts(revoked []store.IssuedCert) int
}

// endCerts closes what runs here on the certificates revoked.
func (f *fanout) endCerts(revoked []store.IssuedCert) {
	if len(revoked) == 0 {
		return
	}
	n := 0
	for _, k := range f.killers {
		if e, ok := k.(certEnder); ok {
			n += e.EndCerts(revoked)
		}
	}
	if n > 0 {
		f.log.Info("closed connections whose certificate was revoked", "connections", n, "certificates", len(revoked))
	}
}

// endSession closes what runs here of a session that ended.
func (f *fanout) endSession(s store.Session) {
	reason := s.EndReason
	if reason == "" {
		reason = sessions.ReasonRevoked
	}
	for _, k := range f.killers {
		k.EndSession(s, reason)
	}
}

// reconcile brings local live access in line with the store, for when
// changes may have been missed, in a few queries whatever the number of
// agents and sessions. full (after a Resync) also re-evaluates every live
// session and stream, which asks the store about each: the periodic sweep
// does not, so that nothing is polled per session.
func (f *fanout) reconcile(ctx context.Context, full bool) {
	defer panics.Recover(f.log, "reconcile with the store", nil)
	since := f.lastSweep.Add(-2 * f.interval)
	f.lastSweep = f.clock()
	if full {
		f.reeval(ctx)
	}
	f.applyNetwork(ctx)
	f.applyCA(ctx)
	f.scheduleRequests(ctx)
	users, err := f.store.ListUsers(ctx)
	if err != nil {
		f.log.Warn("reconcile: list users", "err", storeError(err))
		return
	}
	for _, u := range users {
		if u.Locked {
			for _, k := range f.killers {
				k.EndUser(u.Name, sessions.ReasonRevoked)
			}
		}
	}
	agents, err := f.store.ListAgents(ctx)
	if err != nil {
		f.log.Warn("reconcile: list agents", "err", storeError(err))
		return
	}
	for _, a := range agents {
		if a.Locked {
			for _, k := range f.killers {
				k.EndAgent(a.Name, sessions.ReasonRevoked)
			}
		}
	}
	// The deny list: one query, whatever the number of connections.
	revoked, err := f.store.RevokedCertificates(ctx, f.clock())
	if err != nil {
		f.log.Warn("reconcile: list revoked certificates", "err", storeError(err))
	} else {
		f.endCerts(revoked)
	}
	recent, err := f.store.ListSessions(ctx, store.SessionFilter{Limit: 1000})
	if err != nil {
		f.log.Warn("reconcile: list sessions", "err", storeError(err))
		return
	}
	for _, s := range recent {
		switch {
		case s.State == store.SessionActive:
			f.schedule(s)
		case s.EndedAt.After(since):
			f.unschedule(s.ID)
			if !f.expiredHere(s.ID) { // closed here by expire already
				f.endSession(s)
			}
		}
	}
}

// schedule ends the active session s at its deadline, unless it is
// scheduled already.
func (f *fanout) schedule(s store.Session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if _, ok := f.timers[s.ID]; ok {
		return
	}
	now := f.clock()
	for id, at := range f.expired {
		if now.Sub(at) > expiredMemory {
			delete(f.expired, id)
		}
	}
	if _, ok := f.expired[s.ID]; ok {
		return
	}
	if f.timers == nil {
		f.timers = map[string]*time.Timer{}
	}
	id := s.ID
	f.timers[id] = time.AfterFunc(s.Deadline.Sub(f.clock()), func() {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return
		}
		delete(f.timers, id)
		if f.expired == nil {
			f.expired = map[string]time.Time{}
		}
		f.expired[id] = f.clock()
		f.timersWG.Add(1)
		f.mu.Unlock()
		defer f.timersWG.Done()
		f.expire(id)
	})
}

// expiredHere reports whether this gateway's deadline timer for session id
// fired (expire ends it in the store and closes it here, once).
func (f *fanout) expiredHere(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.expired[id]
	return ok
}

// expiredMemory is how long a session ended here at its deadline is not
// scheduled again.
const expiredMemory = 10 * time.Minute

func (f *fanout) unschedule(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.timers[id]; ok {
		t.Stop()
		delete(f.timers, id)
	}
}

// expire ends a session at its deadline: in the store (once, whichever
// gateway comes first) and here.
func (f *fanout) expire(id string) {
	defer panics.Recover(f.log, "end a session at its deadline", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := f.clock()
	ev := audit.Event{Time: now, Type: audit.SessionEnded, Actor: "system", Subject: id, Outcome: audit.Success, Reason: sessions.ReasonExpired}
	s, err := f.store.EndSession(ctx, id, store.SessionExpired, sessions.ReasonExpired, now, ev)
	if err != nil {
		f.log.Error("end session at its deadline; the next reconciliation retries", "session", id, "err", storeError(err))
		f.mu.Lock()
		delete(f.expired, id) // so that it is scheduled again
		f.mu.Unlock()
		return
	}
	f.endSession(s)
}

// stop cancels the deadline timers and waits for those running.
func (f *fanout) stop() {
	f.mu.Lock()
	f.closed = true
	for id, t := range f.timers {
		t.Stop()
		delete(f.timers, id)
	}
	f.mu.Unlock()
	f.requests.stop()
	f.timersWG.Wait()
}
