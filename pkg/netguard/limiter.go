package netguard

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// Defaults of a gateway's caps.
const (
	// DefaultPerSource is the default cap on the concurrent connections of
	// one source. It is far above what one person or one agent opens (a
	// handful of HTTPS connections, one SSH connection per ssh -J), so
	// that a whole office behind one NAT address still fits, and far
	// below the total, so that one source holds a small share of it.
	DefaultPerSource = 256
	// MaxDefaultTotal caps the default total budget: past some tens of
	// thousands of connections memory (TLS buffers and goroutines, some
	// tens of KiB each), not descriptors, is what runs out.
	MaxDefaultTotal = 65536
	// minHeadroom is the fewest descriptors DefaultTotal leaves for the
	// rest of the process (store, QUIC socket, logs, outbound dials).
	minHeadroom = 64
)

// DefaultTotal is the default total budget of concurrent connections for
// a process whose open-file limit is fileLimit (0 if unknown): 80% of it,
// leaving at least 64 descriptors and a fifth of the limit for the store,
// the QUIC socket and outbound connections, and at most MaxDefaultTotal.
func DefaultTotal(fileLimit uint64) int {
	if fileLimit == 0 || fileLimit > 10*MaxDefaultTotal {
		return MaxDefaultTotal
	}
	total := int(fileLimit) * 8 / 10
	total = min(total, int(fileLimit)-minHeadroom, MaxDefaultTotal)
	return max(total, 1)
}

// Limits bound concurrent connections.
type Limits struct {
	// PerSource caps the connections of one source (an IPv4 address or an
	// IPv6 /64); zero or less means no cap.
	PerSource int
	// Total caps all connections; zero or less means no cap.
	Total int
}

// Refusal reasons, as logged.
const (
	ReasonPerSource = "per-source cap"
	ReasonTotal     = "total cap"
)

// Stats counts what a Limiter did.
type Stats struct {
	Active             int   // connections holding a slot now
	RefusedPerSource   int64 // refused because their source was at its cap
	RefusedTotal       int64 // refused because the total was reached
	LargestSourceCount int   // the most slots one source holds now
}

// A Limiter hands out connection slots under Limits. It is safe for
// concurrent use; one Limiter may serve several listeners, which then
// share its caps.
type Limiter struct {
	name   string
	limits Limits
	log    *slog.Logger
	burst  *burst

	mu       sync.Mutex // guards bySource and total
	bySource map[netip.Addr]int
	total    int

	refusedPerSource atomic.Int64
	refusedTotal     atomic.Int64
}

// NewLimiter returns a Limiter; name says what it guards in its log lines
// ("TCP"); log may be nil (no logging).
func NewLimiter(name string, l Limits, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim := &Limiter{name: name, limits: l, log: log, bySource: map[netip.Addr]int{}}
	lim.burst = newBurst(SummaryInterval, lim.summarise)
	return lim
}

// Limits returns the caps.
func (l *Limiter) Limits() Limits { return l.limits }

// Acquire takes a slot for a connection from ip, arriving through via
// (a listener's name, for the log). It returns the function that gives
// the slot back (safe to call more than once), or ok false when a cap is
// reached: the caller closes the connection at once. A refusal is counted
// and logged in aggregate.
func (l *Limiter) Acquire(ip netip.Addr, via string) (release func(), ok bool) {
	key := SourceKey(ip)
	l.mu.Lock()
	reason := ""
	switch {
	case l.limits.Total > 0 && l.total >= l.limits.Total:
		reason = ReasonTotal
	case l.limits.PerSource > 0 && l.bySource[key] >= l.limits.PerSource:
		reason = ReasonPerSource
	default:
		l.total++
		l.bySource[key]++
	}
	l.mu.Unlock()
	if reason != "" {
		l.refuse(key, via, reason)
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(key) }) }, true
}

func (l *Limiter) release(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.bySource[key] - 1; n > 0 {
		l.bySource[key] = n
	} else {
		delete(l.bySource, key)
	}
}

// Count returns the slots in use now.
func (l *Limiter) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Stats returns the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	s := Stats{Active: l.total}
	for _, n := range l.bySource {
		s.LargestSourceCount = max(s.LargestSourceCount, n)
	}
	l.mu.Unlock()
	s.RefusedPerSource = l.refusedPerSource.Load()
	s.RefusedTotal = l.refusedTotal.Load()
	return s
}

func (l *Limiter) refuse(key netip.Addr, via, reason string) {
	limit := l.limits.PerSource
	if reason == ReasonTotal {
		l.refusedTotal.Add(1)
		limit = l.limits.Total
	} else {
		l.refusedPerSource.Add(1)
	}
	if l.burst.note(via+"\x00"+reason, key, "") {
		l.log.Warn("refusing connections: "+reason+" reached; further refusals are summarised every minute",
			"guard", l.name, "listener", via, "source", key.String(), "cap", limit)
	}
}

func (l *Limiter) summarise(key string, t *tally) {
	via, reason, _ := strings.Cut(key, "\x00")
	top, n := t.busiest()
	l.log.Warn("refused connections: "+reason+" reached", "guard", l.name, "listener", via,
		"refused", t.count, "sources", len(t.sources), "busiest_source", top.String(), "busiest_refused", n,
		"interval", l.burst.interval.String())
}

// Close writes the last refusal summary. The Limiter goes on handing out
// slots (connections still close during a shutdown). Safe to call twice.
func (l *Limiter) Close() { l.burst.Close() }

// SourceKey returns the source ip counts under: the address itself for
// IPv4 (including IPv4-mapped IPv6), its /64 for IPv6. The zero Addr (no
// IP) is a source of its own.
func SourceKey(ip netip.Addr) netip.Addr {
	if !ip.IsValid() {
		return ip
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

// AddrIP returns the IP of a network address (TCP, UDP or host:port), or
// the zero Addr.
func AddrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
