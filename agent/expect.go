package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

const (
	// expectTTL is how long an announced direct stream may take to arrive.
	expectTTL = 30 * time.Second
	// maxExpected bounds the announced streams not arrived yet.
	maxExpected = 4096
)

// expectation is a direct stream a gateway announced (wire.MsgExpect).
type expectation struct {
	caller, serial, service string
	expires                 time.Time
	// from is the gateway connection that announced it: it tracks the
	// stream through the caller's lease; the others are told (adopt).
	from *session
	// committed is closed when that gateway says the stream's audit event
	// is durable (wire.MsgCommitted): no byte passes before.
	committed chan struct{}
	// dbUser and dbPassword: the database credential the gateway leased
	// for the stream, for a service that logs in for the caller.
	dbUser     string
	dbPassword wire.Secret
}

// liveDirect is a direct stream being served.
type liveDirect struct {
	x     expectation
	abort func(quic.StreamErrorCode)
}

var (
	errNotAnnounced = errors.New("no gateway announced this stream")
	errCut          = errors.New("the gateway cut this stream before it began")
	errTicketInUse  = errors.New("another stream is served under this ticket")
	errCallerLeft   = errors.New("the caller gave up the stream before a gateway announced it")
)

// expected holds the direct streams gateways announced to this agent as a
// target, until each arrives (once), and the direct streams being served,
// so that the gateway can cut them (wire.MsgCut).
type expected struct {
	mu      sync.Mutex
	pending map[string]expectation
	waiters map[string][]chan struct{}
	cut     map[string]time.Time   // tickets cut before their stream arrived
	commits map[string]expectation // announced, not committed yet
	live    map[string]liveDirect
	clock   func() time.Time
	// wait bounds how long a stream waits for its announcement (take).
	wait time.Duration
}

// setWait sets how long a stream waits for its announcement.
func (e *expected) setWait(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.wait = d
}

func newExpected() *expected {
	return &expected{pending: map[string]expectation{}, waiters: map[string][]chan struct{}{},
		cut: map[string]time.Time{}, live: map[string]liveDirect{}, commits: map[string]expectation{}, clock: time.Now,
		wait: transport.HeaderTimeout}
}

// add records an announcement from the gateway connection s and wakes a
// stream already waiting for it.
func (e *expected) add(m wire.Control, s *session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock()
	e.expire(now)
	if len(e.pending) >= maxExpected || m.Ticket == "" {
		return
	}
	_, announced := e.pending[m.Ticket]
	_, served := e.live[m.Ticket]
	if announced || served {
		// A caller proposes its tickets (wire.NewTicket): one it reuses
		// while its first stream is announced or served would take
		// over that stream's record, and a cut of the ticket would miss
		// one of the two. No stream may start under it any more; one
		// being served goes on (and a cut still reaches it).
		e.cut[m.Ticket] = now
		return
	}
	x := expectation{caller: m.Caller, serial: m.Serial, service: m.Service, expires: now.Add(expectTTL), from: s,
		committed: make(chan struct{}), dbUser: m.DBUser, dbPassword: m.DBPassword}
	e.pending[m.Ticket] = x
	e.commits[m.Ticket] = x
	for _, w := range e.waiters[m.Ticket] {
		close(w)
	}
	delete(e.waiters, m.Ticket)
}

func (e *expected) expire(now time.Time) {
	for t, x := range e.pending {
		if now.After(x.expires) {
			delete(e.pending, t)
		}
	}
	for t, x := range e.commits {
		if now.After(x.expires) {
			delete(e.commits, t)
		}
	}
	for t, at := range e.cut {
		if now.Sub(at) > expectTTL {
			delete(e.cut, t)
		}
	}
}

// take removes and returns the announcement of ticket, waiting for it if
// it has not arrived yet, until ctx ends (the caller left) or e.wait has
// passed: the gateway's message and the caller's stream race each other,
// and a caller sends its stream ahead of the gateway's decision.
func (e *expected) take(caller context.Context, ticket string) (expectation, error) {
	e.mu.Lock()
	wait := e.wait
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(caller, wait)
	defer cancel()
	for {
		e.mu.Lock()
		if _, ok := e.cut[ticket]; ok {
			e.mu.Unlock()
			return expectation{}, errCut
		}
		if x, ok := e.pending[ticket]; ok {
			delete(e.pending, ticket)
			e.mu.Unlock()
			return x, nil
		}
		if len(e.waiters) >= maxExpected {
			e.mu.Unlock()
			return expectation{}, errNotAnnounced
		}
		w := make(chan struct{})
		e.waiters[ticket] = append(e.waiters[ticket], w)
		e.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			e.mu.Lock()
			ws := e.waiters[ticket]
			for i, x := range ws {
				if x == w {
					ws = append(ws[:i], ws[i+1:]...)
					break
				}
			}
			if len(ws) == 0 {
				delete(e.waiters, ticket)
			} else {
				e.waiters[ticket] = ws
			}
			e.mu.Unlock()
			if caller.Err() != nil {
				return expectation{}, errCallerLeft
			}
			return expectation{}, errNotAnnounced
		}
	}
}

// serving records a direct stream being served under ticket, with the
// function that resets it; the returned func forgets it. It reports false,
// recording nothing, if another stream is served under ticket.
func (e *expected) serving(ticket string, x expectation, abort func(quic.StreamErrorCode)) (func(), bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.live[ticket]; dup {
		return func() {}, false
	}
	e.live[ticket] = liveDirect{x: x, abort: abort}
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.live, ticket)
	}, true
}

// cutTicket resets the direct stream of ticket with code, or, if it has
// not arrived yet, makes sure it will be refused. A ticket this agent does
// not know (its stream over: a gateway says so when the caller ends the
// lease, after every stream) leaves no trace.
func (e *expected) cutTicket(ticket string, code quic.StreamErrorCode) {
	e.mu.Lock()
	abort := e.live[ticket].abort
	if abort == nil {
		e.voidLocked(ticket)
	}
	e.mu.Unlock()
	if abort != nil {
		abort(code)
	}
}

// report returns the direct stream of ticket if it is being served; if it
// is not, an announcement of it is void (wire.MsgReport: its lease ended).
func (e *expected) report(ticket string) (expectation, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l, ok := e.live[ticket]; ok {
		return l.x, true
	}
	e.voidLocked(ticket)
	return expectation{}, false
}

// voidLocked makes sure no stream starts under ticket, if it was announced
// or is waited for. e.mu is held.
func (e *expected) voidLocked(ticket string) {
	_, announced := e.pending[ticket]
	_, uncommitted := e.commits[ticket]
	if announced || uncommitted || len(e.waiters[ticket]) > 0 {
		e.cut[ticket] = e.clock()
	}
	delete(e.pending, ticket)
	delete(e.commits, ticket)
	for _, w := range e.waiters[ticket] {
		close(w)
	}
	delete(e.waiters, ticket)
}

// serving returns the direct streams being served, by ticket.
func (e *expected) liveStreams() map[string]expectation {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]expectation, len(e.live))
	for t, l := range e.live {
		out[t] = l.x
	}
	return out
}

// commit marks the stream of ticket as audited (wire.MsgCommitted).
func (e *expected) commit(ticket string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.commits[ticket]; ok {
		close(x.committed)
		delete(e.commits, ticket)
	}
}

// waiting reports whether a stream waits for the announcement of ticket.
func (e *expected) waiting(ticket string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.waiters[ticket]) > 0
}
