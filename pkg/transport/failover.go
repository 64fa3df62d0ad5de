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
// Under a deadline each opener gets a share of the time left, so a dial
// that hangs on a dead gateway leaves time to try the next.
type Failover struct {
	Openers []StreamOpener
	// InOrder starts every attempt with the first opener instead of the
	// one that opened the last stream: for openers that fail at once when
	// their gateway is down (an agent's connections), so streams go back
	// to the first gateway when it is back.
	InOrder bool

	mu   sync.Mutex // guards pref
	pref int        // the opener that opened the last stream
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
		first = 0
	}
	var errs []error
	for k := range f.Openers {
		i := (first + k) % len(f.Openers)
		s, err := f.open(ctx, f.Openers[i], len(f.Openers)-k)
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
