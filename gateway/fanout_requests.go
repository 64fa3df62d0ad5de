package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The end of access requests' windows, on every gateway: each gateway
// keeps a timer at the end of every approved request's window (and at the
// deadline of every pending one). When it fires, the gateway re-evaluates
// its live sessions and streams — those only the request allowed close,
// telling the user the request expired — and marks the request expired in
// the store (once, whichever gateway comes first; the others' EndRequest
// changes nothing). Timers are set from the store's changes (this
// gateway's own included), at start and at every reconciliation sweep, so
// that a gateway that missed a change still ends the window on time.

// requestFire is how long after a request's end its timer fires: the
// access decisions treat the end itself as outside the window.
const requestFire = 10 * time.Millisecond

// requestTimers are the fanout's timers of access requests.
type requestTimers struct {
	mu     sync.Mutex
	timers map[string]requestTimer
	closed bool
	wg     sync.WaitGroup
}

type requestTimer struct {
	t   *time.Timer
	due time.Time
}

// stop cancels the timers and waits for those running.
func (rt *requestTimers) stop() {
	rt.mu.Lock()
	rt.closed = true
	for id, t := range rt.timers {
		t.t.Stop()
		delete(rt.timers, id)
	}
	rt.mu.Unlock()
	rt.wg.Wait()
}

// applyRequest acts on a change of an access request.
func (f *fanout) applyRequest(ctx context.Context, c store.Change) {
	r, err := f.store.GetRequest(ctx, c.ID)
	if err != nil {
		f.warn(c, err)
		return
	}
	switch r.State {
	case store.RequestPending, store.RequestApproved:
		f.scheduleRequest(r)
	default:
		f.unscheduleRequest(r.ID)
		if c.Origin != f.self {
			// Revoked or expired on another gateway: what it allowed here
			// ends now. (This gateway's own revocations and expiries
			// re-evaluated when they were made.)
			f.reeval(ctx)
		}
	}
}

// scheduleRequests sets the timers of every pending and approved request.
func (f *fanout) scheduleRequests(ctx context.Context) {
	defer panics.Recover(f.log, "schedule the ends of access requests", nil)
	rs, err := f.store.ListRequests(ctx, store.RequestFilter{States: []store.RequestState{store.RequestPending, store.RequestApproved}})
	if err != nil {
		f.log.Warn("list access requests to schedule their ends", "err", storeError(err))
		return
	}
	for _, r := range rs {
		f.scheduleRequest(r)
	}
}

// scheduleRequest sets (or moves) the timer of r: at the end of its window
// if approved, at its decision deadline if pending.
func (f *fanout) scheduleRequest(r store.AccessRequest) {
	due := r.PendingUntil
	if r.State == store.RequestApproved {
		due = r.End
	}
	rt := &f.requests
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return
	}
	if cur, ok := rt.timers[r.ID]; ok {
		if cur.due.Equal(due) {
			return
		}
		cur.t.Stop()
	}
	if rt.timers == nil {
		rt.timers = map[string]requestTimer{}
	}
	id := r.ID
	t := time.AfterFunc(due.Sub(f.clock())+requestFire, func() {
		rt.mu.Lock()
		if rt.closed {
			rt.mu.Unlock()
			return
		}
		if cur, ok := rt.timers[id]; ok && cur.due.Equal(due) {
			delete(rt.timers, id)
		}
		rt.wg.Add(1)
		rt.mu.Unlock()
		defer rt.wg.Done()
		f.endRequest(id)
	})
	rt.timers[id] = requestTimer{t: t, due: due}
}

func (f *fanout) unscheduleRequest(id string) {
	rt := &f.requests
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if cur, ok := rt.timers[id]; ok {
		cur.t.Stop()
		delete(rt.timers, id)
	}
}

// endRequest ends the request id whose time has come: an approved one at
// the end of its window (live access it allowed is closed first, with a
// reason naming it), a pending one at its decision deadline.
func (f *fanout) endRequest(id string) {
	defer panics.Recover(f.log, "end an access request", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := f.store.GetRequest(ctx, id)
	if err != nil {
		f.log.Error("read an access request at its end; the next reconciliation retries", "request", id, "err", storeError(err))
		return
	}
	now := f.clock()
	var reason string
	switch {
	case r.State == store.RequestApproved && !now.Before(r.End):
		f.reeval(ctx)
		reason = "the window ended"
	case r.State == store.RequestPending && !now.Before(r.PendingUntil):
		reason = "not decided in time"
	case r.State == store.RequestExpired && !r.Start.IsZero():
		// Another gateway came first: what the grant allowed here ends
		// now too, whether or not its change has arrived yet.
		f.reeval(ctx)
		return
	default:
		return // moved or ended meanwhile
	}
	ev := audit.Event{Time: now, Type: audit.RequestExpired, Actor: "system", Subject: id, Outcome: audit.Success,
		Reason: reason, Details: map[string]string{"user": r.User, "role": r.Role}}
	if _, _, err := f.store.EndRequest(ctx, id, store.RequestExpired, "system", reason, now, ev); err != nil {
		f.log.Error("mark an access request expired; the next reconciliation retries", "request", id, "err", storeError(err))
		return
	}
	f.log.Info("access request expired", "request", id, "user", r.User, "role", r.Role, "reason", reason)
}
