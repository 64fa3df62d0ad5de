package auth

import (
	"container/list"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Bounds on an IPLimiter's memory.
const (
	// maxIPEntries is the most sources an IPLimiter tracks; past it, the
	// least recently seen is forgotten.
	maxIPEntries = 100_000
	// idleAfter is how long a source must be unseen before it is forgotten
	// (longer if its bucket takes longer to refill).
	idleAfter = 10 * time.Minute
	// maxIdleAfter caps the idle time however slowly buckets refill.
	maxIdleAfter = 24 * time.Hour
)

// rateLimitedBody is the answer to a request over the limit, in the shape
// of the API's errors (pkg/api.Error).
const rateLimitedBody = `{"error":"too many requests from your address; wait a few seconds and try again","code":"rate_limited"}` + "\n"

// An IPLimiter limits the rate of requests from each source address with a
// token bucket per source, for endpoints that serve callers not yet
// authenticated. An IPv4 address is a source of its own; IPv6 addresses are
// grouped by /64, the block one subscriber usually holds. All requests whose
// address is unknown (the zero netip.Addr) share one bucket.
//
// Memory stays bounded: sources unseen for ten minutes are forgotten, and
// at most 100,000 are tracked, the least recently seen being forgotten
// first. Eviction happens within Allow; there is no background goroutine.
//
// An IPLimiter is safe for concurrent use.
type IPLimiter struct {
	limit      rate.Limit
	burst      int
	clock      func() time.Time
	idle       time.Duration
	maxEntries int // maxIPEntries; tests lower it

	mu      sync.Mutex
	sources map[netip.Addr]*list.Element // values are *ipSource; guarded by mu
	lru     *list.List                   // most recently seen first; guarded by mu
}

type ipSource struct {
	key      netip.Addr
	lim      *rate.Limiter
	lastSeen time.Time
}

// NewIPLimiter returns a limiter allowing each source r requests per
// second on average, in bursts of up to burst. clock is the time source;
// nil means time.Now.
func NewIPLimiter(r rate.Limit, burst int, clock func() time.Time) *IPLimiter {
	if clock == nil {
		clock = time.Now
	}
	idle := idleAfter
	if r > 0 && r != rate.Inf {
		// Forgetting a source resets its bucket to full: wait until it
		// would have refilled anyway.
		fill := float64(burst) / float64(r) * float64(time.Second)
		if fill > float64(maxIdleAfter) {
			idle = maxIdleAfter
		} else if fill > float64(idle) {
			idle = time.Duration(fill)
		}
	}
	return &IPLimiter{
		limit:      r,
		burst:      burst,
		clock:      clock,
		idle:       idle,
		maxEntries: maxIPEntries,
		sources:    make(map[netip.Addr]*list.Element),
		lru:        list.New(),
	}
}

// sourceKey returns the bucket key for ip: the address itself for IPv4
// (including IPv4-mapped IPv6), its /64 for IPv6.
func sourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

// Allow reports whether a request from ip may proceed now, and if so
// counts it.
func (l *IPLimiter) Allow(ip netip.Addr) bool {
	ok, _ := l.allow(ip)
	return ok
}

// allow is Allow that also says, when refusing, how long until the next
// request from ip would be allowed.
func (l *IPLimiter) allow(ip netip.Addr) (ok bool, retryAfter time.Duration) {
	now := l.clock()
	key := sourceKey(ip)

	l.mu.Lock()
	defer l.mu.Unlock()

	l.evictIdleLocked(now)
	var src *ipSource
	if e, found := l.sources[key]; found {
		l.lru.MoveToFront(e)
		src = e.Value.(*ipSource)
	} else {
		for l.lru.Len() >= l.maxEntries {
			l.removeLocked(l.lru.Back())
		}
		src = &ipSource{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.sources[key] = l.lru.PushFront(src)
	}
	if now.After(src.lastSeen) {
		src.lastSeen = now
	}
	if src.lim.AllowN(now, 1) {
		return true, 0
	}
	if l.limit <= 0 {
		return false, l.idle
	}
	wait := (1 - src.lim.TokensAt(now)) / float64(l.limit) // seconds
	if wait > l.idle.Seconds() {
		return false, l.idle
	}
	return false, time.Duration(math.Ceil(wait * float64(time.Second)))
}

// evictIdleLocked forgets the sources unseen for l.idle, oldest first.
func (l *IPLimiter) evictIdleLocked(now time.Time) {
	for e := l.lru.Back(); e != nil; e = l.lru.Back() {
		if now.Sub(e.Value.(*ipSource).lastSeen) <= l.idle {
			return
		}
		l.removeLocked(e)
	}
}

func (l *IPLimiter) removeLocked(e *list.Element) {
	delete(l.sources, e.Value.(*ipSource).key)
	l.lru.Remove(e)
}

// size returns the number of sources tracked.
func (l *IPLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// Middleware returns a handler that passes a request to next only if its
// source, as given by ipOf, is within the limit. Otherwise it answers 429
// Too Many Requests with a Retry-After header and a JSON error whose code
// is "rate_limited". A nil ipOf takes the address from r.RemoteAddr, which
// is right only when no proxy stands in front of the gateway.
func (l *IPLimiter) Middleware(next http.Handler, ipOf func(*http.Request) netip.Addr) http.Handler {
	if ipOf == nil {
		ipOf = remoteIP
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait := l.allow(ipOf(r))
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		secs := max(1, int64(math.Ceil(wait.Seconds())))
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(rateLimitedBody))
	})
}

// remoteIP returns the address of r's peer, or the zero Addr.
func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}
