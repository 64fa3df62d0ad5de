package dnsserver

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/pkg/netguard"
)

// maxRateSources bounds the sources the rate limiter remembers; past it,
// sources it does not know share one bucket until idle ones are swept.
const maxRateSources = 16384

// sourceLimiter is a token bucket per source (an IPv4 address or an IPv6
// /64, as netguard counts them).
type sourceLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex // guards the fields below
	buckets   map[netip.Addr]*bucket
	overflow  *rate.Limiter
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newSourceLimiter(limit rate.Limit, burst int) *sourceLimiter {
	return &sourceLimiter{limit: limit, burst: burst, buckets: map[netip.Addr]*bucket{},
		overflow: rate.NewLimiter(limit, burst)}
}

// allow takes one token of ip's bucket at now.
func (l *sourceLimiter) allow(ip netip.Addr, now time.Time) bool {
	key := netguard.SourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxRateSources {
			l.sweepLocked(now)
		}
		if len(l.buckets) >= maxRateSources {
			return l.overflow.AllowN(now, 1)
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// sweepLocked forgets the buckets idle long enough to be full again (a
// fresh bucket is the same), at most once a second.
func (l *sourceLimiter) sweepLocked(now time.Time) {
	if now.Sub(l.lastSweep) < time.Second {
		return
	}
	l.lastSweep = now
	refill := time.Minute
	if l.limit > 0 && l.limit != rate.Inf {
		refill = max(time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)), time.Second)
	}
	for k, b := range l.buckets {
		if now.Sub(b.seen) >= refill {
			delete(l.buckets, k)
		}
	}
}

// size returns the number of sources remembered (for tests).
func (l *sourceLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
