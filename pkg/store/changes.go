package store

import (
	"context"
	"sync"
	"time"
)

// ChangeKind says what a Change is about.
type ChangeKind string

// Kinds of change. The store emits one for every committed change that can
// end or narrow live access somewhere, so that every gateway sharing the
// store can act on it (gateway/fanout.go).
const (
	// ChangeSession: a session was created (active) or ended. ID is the
	// session ID, Subject its user.
	ChangeSession ChangeKind = "session"
	// ChangeUser: a user was locked, unlocked or removed, or their roles
	// changed. ID is the user name.
	ChangeUser ChangeKind = "user"
	// ChangeAgent: an agent was locked or unlocked. ID is the agent name.
	ChangeAgent ChangeKind = "agent"
	// ChangeRole: a role was created, updated or removed. ID is its name.
	ChangeRole ChangeKind = "role"
	// ChangePolicy: a policy rule was added or removed. ID is its ID.
	ChangePolicy ChangeKind = "policy"
	// ChangeResync: changes may have been missed (the notification
	// connection was lost, or the watcher fell behind); reconcile
	// everything from the store.
	ChangeResync ChangeKind = "resync"
)

// Change tells a watcher that something changed in the store. It carries
// names, never the new state: read that from the store.
type Change struct {
	Kind    ChangeKind `json:"k"`
	ID      string     `json:"id,omitempty"`
	Subject string     `json:"s,omitempty"`
	// Origin is the id of the gateway whose store made the change (the
	// store's Origin option), "" if it has none.
	Origin string `json:"o,omitempty"`
}

// Gateway is one gateway of the cluster, as it advertises itself in its
// heartbeats.
type Gateway struct {
	// ID is unique in the cluster (the host name by default).
	ID string
	// APIAddr, QUICAddr and SSHAddr are the addresses the gateway
	// advertises (SSHAddr "" when its jump host is off).
	APIAddr, QUICAddr, SSHAddr string
	Version                    string
	StartedAt                  time.Time
	HeartbeatAt                time.Time
	// AliveFor is how long a heartbeat vouches for the gateway (three of
	// its heartbeat intervals): with none for longer, it is taken for dead.
	AliveFor time.Duration
}

// Alive reports whether g's last heartbeat vouches for it at now.
func (g Gateway) Alive(now time.Time) bool {
	return now.Sub(g.HeartbeatAt) < g.AliveFor
}

// Broker delivers changes to watchers within one process. Stores use it:
// SQLite for every change it commits (one gateway per file), PostgreSQL for
// what its LISTEN connection receives. The zero value is ready.
//
// Each watcher has a buffer; a watcher that falls behind loses changes and
// receives one ChangeResync instead, as soon as it has room again, so that
// delivery is at-least-once in effect: every change is either delivered
// or covered by a later Resync.
type Broker struct {
	mu     sync.Mutex
	subs   map[*watcher]struct{}
	closed bool
}

// WatchBuffer is the number of changes a watcher may fall behind by before
// it is sent a Resync instead.
const WatchBuffer = 1024

type watcher struct {
	ch     chan Change
	missed bool // a change was dropped: send Resync when there is room
}

// Subscribe returns a channel of the changes published from now on. It is
// closed when ctx ends or the broker closes.
func (b *Broker) Subscribe(ctx context.Context) (<-chan Change, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrUnavailable
	}
	if b.subs == nil {
		b.subs = map[*watcher]struct{}{}
	}
	w := &watcher{ch: make(chan Change, WatchBuffer)}
	b.subs[w] = struct{}{}
	context.AfterFunc(ctx, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[w]; ok {
			delete(b.subs, w)
			close(w.ch)
		}
	})
	return w.ch, nil
}

// Publish hands c to every watcher without blocking.
func (b *Broker) Publish(c Change) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.subs {
		if w.missed {
			select {
			case w.ch <- Change{Kind: ChangeResync}:
				w.missed = false
			default:
				continue
			}
		}
		select {
		case w.ch <- c:
		default:
			w.missed = true
		}
	}
}

// Close closes every watcher's channel; Subscribe fails after it. Safe to
// call more than once.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for w := range b.subs {
		delete(b.subs, w)
		close(w.ch)
	}
}
