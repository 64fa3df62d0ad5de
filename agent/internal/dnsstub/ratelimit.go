package dnsstub

import (
	"net/netip"
	"sync"
	"time"
)

// maxSources bounds the rate limiter's table. Sources idle long enough to
// have a full bucket are forgotten when the table is full; if it is still
// full, queries from new sources are dropped until some go idle.
const maxSources = 4096

// limiter is a token bucket per source address.
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: make(map[netip.Addr]*bucket)}
}

// allow takes one token from src's bucket and reports whether there was one.
func (l *limiter) allow(src netip.Addr) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxSources {
			l.prune(now)
			if len(l.buckets) >= maxSources {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[src] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets the sources whose bucket has refilled: forgetting them
// changes nothing.
func (l *limiter) prune(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
}
