package transport

import (
	"math/rand/v2"
	"time"
)

// Backoff computes reconnection delays: exponential from Min to Max, with
// full jitter in the upper half so that many agents restarting together do
// not reconnect in step. The zero value uses 250 ms and 10 s.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a float in [0, 1); nil means math/rand/v2.
	Rand func() float64

	attempt int
}

// Next returns the delay before the next attempt and counts it.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi <= 0 {
		hi = 10 * time.Second
	}
	d := lo << min(b.attempt, 16)
	if d > hi || d <= 0 {
		d = hi
	}
	b.attempt++
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	// Between d/2 and d.
	return d/2 + time.Duration(r()*float64(d/2))
}

// Reset starts over after a connection that worked.
func (b *Backoff) Reset() { b.attempt = 0 }
