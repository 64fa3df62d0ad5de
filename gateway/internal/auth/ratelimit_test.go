package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/time/rate"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestIPLimiterBurstThenRefill(t *testing.T) {
	clock := newFakeClock()
	l := NewIPLimiter(1, 3, clock.Now)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")

	steps := []struct {
		advance time.Duration
		ip      netip.Addr
		want    bool
	}{
		{0, a, true},
		{0, a, true},
		{0, a, true},
		{0, a, false}, // burst spent
		{0, b, true},  // another source has its own bucket
		{500 * time.Millisecond, a, false},
		{500 * time.Millisecond, a, true}, // one token after a second
		{0, a, false},
		{10 * time.Second, a, true}, // refilled to the burst, no more
		{0, a, true},
		{0, a, true},
		{0, a, false},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		if got := l.Allow(s.ip); got != s.want {
			t.Errorf("step %d: Allow(%v) = %v; want %v", i, s.ip, got, s.want)
		}
	}
}

func TestIPLimiterGrouping(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"fe80::1%eth0", "fe80::2%eth1", true},
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"192.0.2.1", "::ffff:192.0.2.2", false},
		{"::ffff:192.0.2.1", "::ffff:192.0.2.2", false}, // not a /64 of mapped addresses
	}
	for _, tc := range tests {
		t.Run(tc.a+"_"+tc.b, func(t *testing.T) {
			l := NewIPLimiter(1, 1, newFakeClock().Now)
			if !l.Allow(netip.MustParseAddr(tc.a)) {
				t.Fatalf("first Allow(%s) = false; want true", tc.a)
			}
			if got := l.Allow(netip.MustParseAddr(tc.b)); got == tc.same {
				t.Errorf("Allow(%s) after %s = %v; want %v", tc.b, tc.a, got, !tc.same)
			}
		})
	}

	// Unknown sources share one bucket.
	l := NewIPLimiter(1, 1, newFakeClock().Now)
	if !l.Allow(netip.Addr{}) || l.Allow(netip.Addr{}) {
		t.Errorf("the zero Addr does not have one shared bucket")
	}
}

func TestIPLimiterEvictsIdle(t *testing.T) {
	clock := newFakeClock()
	l := NewIPLimiter(1, 2, clock.Now)
	for i := range 50 {
		l.Allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	if got := l.size(); got != 50 {
		t.Fatalf("tracking %d sources; want 50", got)
	}
	clock.Advance(idleAfter)
	l.Allow(netip.MustParseAddr("10.0.1.1"))
	if got := l.size(); got != 51 {
		t.Errorf("after exactly the idle time: tracking %d sources; want 51", got)
	}
	clock.Advance(time.Second)
	l.Allow(netip.MustParseAddr("10.0.1.2"))
	if got := l.size(); got != 2 { // 10.0.1.1 and 10.0.1.2
		t.Errorf("after the idle time: tracking %d sources; want 2", got)
	}
}

func TestIPLimiterIdleCoversSlowRefill(t *testing.T) {
	clock := newFakeClock()
	// Five requests an hour: a bucket takes five hours to refill, so a
	// source is remembered that long, or forgetting it would refill it.
	l := NewIPLimiter(rate.Every(time.Hour), 5, clock.Now)
	a := netip.MustParseAddr("192.0.2.1")
	for range 5 {
		l.Allow(a)
	}
	clock.Advance(4 * time.Hour)
	l.Allow(netip.MustParseAddr("192.0.2.2")) // triggers eviction
	got := 0
	for l.Allow(a) {
		got++
	}
	if got != 4 {
		t.Errorf("after 4h: %d requests allowed; want 4", got)
	}
}

func TestIPLimiterBoundsMemory(t *testing.T) {
	clock := newFakeClock()
	l := NewIPLimiter(1, 1, clock.Now)
	l.maxEntries = 100
	for i := range 10_000 {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 0, 0, 15: 1})
		if !l.Allow(ip) {
			t.Fatalf("Allow(%v) = false for a new /64; want true", ip)
		}
		if got := l.size(); got > l.maxEntries {
			t.Fatalf("tracking %d sources; want at most %d", got, l.maxEntries)
		}
	}
	if got := len(l.sources); got != l.maxEntries {
		t.Errorf("map holds %d sources; want %d", got, l.maxEntries)
	}

	// The least recently seen goes first.
	l = NewIPLimiter(1, 1, clock.Now)
	l.maxEntries = 2
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	l.Allow(a)
	l.Allow(b)
	l.Allow(a) // refused, but a is now the most recent
	l.Allow(c) // evicts b
	if l.Allow(a) {
		t.Errorf("a was forgotten; want b forgotten")
	}
	if !l.Allow(b) {
		t.Errorf("b was remembered; want it forgotten")
	}
}

func TestIPLimiterConcurrent(t *testing.T) {
	const burst = 10
	l := NewIPLimiter(1, burst, newFakeClock().Now) // the clock never moves
	ips := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	var allowed [2]atomic.Int32
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				k := (g + i) % 2
				if l.Allow(ips[k]) {
					allowed[k].Add(1)
				}
				l.Allow(netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i)}))
			}
		})
	}
	wg.Wait()
	for k := range ips {
		if got := allowed[k].Load(); got != burst {
			t.Errorf("%v: %d requests allowed; want %d", ips[k], got, burst)
		}
	}
}

func TestIPLimiterMiddleware(t *testing.T) {
	tests := []struct {
		limit     rate.Limit
		wantRetry string
	}{
		{1, "1"},
		{rate.Every(10 * time.Second), "10"},
		{rate.Every(2500 * time.Millisecond), "3"},
		{20, "1"},
		{0, fmt.Sprint(int(idleAfter.Seconds()))},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			l := NewIPLimiter(tc.limit, 1, newFakeClock().Now)
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			})
			h := l.Middleware(next, nil) // from RemoteAddr

			serve := func(remote string) *httptest.ResponseRecorder {
				r := httptest.NewRequest(http.MethodPost, "/v1/login", nil)
				r.RemoteAddr = remote
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w
			}
			if w := serve("192.0.2.1:1000"); w.Code != http.StatusNoContent {
				t.Fatalf("first request: got status %d; want %d", w.Code, http.StatusNoContent)
			}
			w := serve("192.0.2.1:1001")
			if w.Code != http.StatusTooManyRequests {
				t.Fatalf("second request: got status %d; want %d", w.Code, http.StatusTooManyRequests)
			}
			if got := w.Header().Get("Retry-After"); got != tc.wantRetry {
				t.Errorf("Retry-After = %q; want %q", got, tc.wantRetry)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", got)
			}
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			want := map[string]any{
				"error": "too many requests from your address; wait a few seconds and try again",
				"code":  "rate_limited",
			}
			if diff := cmp.Diff(want, body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if w := serve("192.0.2.2:1000"); w.Code != http.StatusNoContent {
				t.Errorf("other address: got status %d; want %d", w.Code, http.StatusNoContent)
			}
		})
	}
}

func TestIPLimiterMiddlewareIPOf(t *testing.T) {
	l := NewIPLimiter(1, 1, newFakeClock().Now)
	fromHeader := func(r *http.Request) netip.Addr {
		ip, _ := netip.ParseAddr(r.Header.Get("X-Test-Client"))
		return ip
	}
	h := l.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), fromHeader)
	for i, tc := range []struct {
		client string
		want   int
	}{
		{"2001:db8::1", http.StatusOK},
		{"2001:db8::2", http.StatusTooManyRequests}, // same /64, whatever RemoteAddr says
		{"2001:db8:0:1::1", http.StatusOK},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = fmt.Sprintf("198.51.100.%d:443", i)
		r.Header.Set("X-Test-Client", tc.client)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("client %s: got status %d; want %d", tc.client, w.Code, tc.want)
		}
	}
}
