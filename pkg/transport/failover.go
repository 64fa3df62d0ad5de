package transport

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Failover opens streams through the first of several openers (one per
// gateway) that can open one: it starts with the one that opened the last
// stream, and when that fails (not connected, the connection died, the
// dial failed) tries the next at once, so a local client is reset only
// when no gateway can take its stream. Opening a stream sends nothing to
// the gateway before it succeeds, so trying the next one is always safe.
// An opener that has not answered after HedgeAfter (a dial to a gateway
// that died without a word waits for the handshake timeout) gets the next
// one tried beside it: the first stream opened wins, and a late one is
// cancelled (it carried nothing yet).
type Failover struct {
	Openers []StreamOpener
	// InOrder starts every attempt with the first opener instead of the
	// one that opened the last stream: for openers that fail at once when
	// their gateway is down (an agent's connections), so streams go back
	// to the first gateway when it is back. They are tried one after the
	// other, each with a share of the deadline.
	InOrder bool
	// HedgeAfter is how long an opener may take before the next is tried
	// beside it; zero means DefaultHedgeAfter.
	HedgeAfter time.Duration

	mu   sync.Mutex // guards pref
	pref int        // the opener that opened the last stream
}

// DefaultHedgeAfter: far above a handshake with a live gateway, even
// across the world, far below the handshake timeout.
const DefaultHedgeAfter = time.Second

// Quiet is implemented by an opener that can tell that its gateway has
// been silent for longer than a keepalive round takes (Hearing): it may
// have died without a word, and its connection will say so only at its
// idle timeout, after a stream opened on it waited for a reply in vain.
// Failover tries a quiet opener after the others; if all are quiet, in
// the usual order.
type Quiet interface{ Quiet() bool }

// order returns the openers' indices from first on, the quiet ones last.
func (f *Failover) order(first int) []int {
	n := len(f.Openers)
	order := make([]int, 0, n)
	var quiet []int
	for k := range n {
		i := (first + k) % n
		if q, ok := f.Openers[i].(Quiet); ok && q.Quiet() {
			quiet = append(quiet, i)
			continue
		}
		order = append(order, i)
	}
	return append(order, quiet...)
}

// OpenStream implements StreamOpener.
func (f *Failover) OpenStream(ctx context.Context) (*quic.Stream, error) {
	if len(f.Openers) == 0 {
		return nil, ErrNotConnected
	}
	f.mu.Lock()
	first := f.pref
	f.mu.Unlock()
	if f.InOrder {
		return f.inOrder(ctx, f.order(0))
	}
	return f.hedged(ctx, f.order(first))
}

// hedged tries the openers in order, the next one at once when one fails,
// or beside it when it has not answered after HedgeAfter.
func (f *Failover) hedged(ctx context.Context, order []int) (*quic.Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		s   *quic.Stream
		err error
		i   int
	}
	n := len(f.Openers)
	results := make(chan result, n)
	started, pending := 0, 0
	start := func() {
		i := order[started]
		started++
		pending++
		go func() {
			s, err := f.Openers[i].OpenStream(ctx)
			results <- result{s, err, i}
		}()
	}
	// On return every opener has answered: a late stream is cancelled.
	defer func() {
		cancel()
		for ; pending > 0; pending-- {
			if r := <-results; r.s != nil {
				r.s.CancelWrite(StreamCanceled)
				r.s.CancelRead(StreamCanceled)
			}
		}
	}()
	hedge := f.HedgeAfter
	if hedge <= 0 {
		hedge = DefaultHedgeAfter
	}
	timer := time.NewTimer(hedge)
	defer timer.Stop()
	start()
	var errs []error
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				f.mu.Lock()
				f.pref = r.i
				f.mu.Unlock()
				return r.s, nil
			}
			if ctx.Err() != nil {
				return nil, r.err
			}
			errs = append(errs, r.err)
			if started < n {
				start()
				timer.Reset(hedge)
			}
		case <-timer.C:
			if started < n {
				start()
				timer.Reset(hedge)
			}
		}
	}
	if allNotConnected(errs) {
		return nil, ErrNotConnected
	}
	return nil, errors.Join(errs...)
}

// inOrder tries the openers one after the other, in order.
func (f *Failover) inOrder(ctx context.Context, order []int) (*quic.Stream, error) {
	var errs []error
	for k, i := range order {
		s, err := f.open(ctx, f.Openers[i], len(order)-k)
		if err == nil {
			f.mu.Lock()
			f.pref = i
			f.mu.Unlock()
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	if allNotConnected(errs) {
		return nil, ErrNotConnected
	}
	return nil, errors.Join(errs...)
}

// open opens a stream with o. Under a deadline, o gets an equal share of
// what is left among the left openers, so that one that hangs (a dial to a
// gateway that died without a word waits for the handshake timeout) leaves
// time for the next.
func (f *Failover) open(ctx context.Context, o StreamOpener, left int) (*quic.Stream, error) {
	if d, ok := ctx.Deadline(); ok && left > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(d)/time.Duration(left))
		defer cancel()
	}
	return o.OpenStream(ctx)
}

func allNotConnected(errs []error) bool {
	for _, err := range errs {
		if !errors.Is(err, ErrNotConnected) {
			return false
		}
	}
	return true
}
