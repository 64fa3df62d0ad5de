package dnsserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"
)

const zone = "prod.tunnel.test."

// fakeSource is a RecordSource whose answer a test sets.
type fakeSource struct {
	mu    sync.Mutex
	gws   []Gateway
	nodes []Node
	err   error
	calls int
}

func (f *fakeSource) Gateways(context.Context) ([]Gateway, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return slices.Clone(f.gws), f.err
}

func (f *fakeSource) Nodes(context.Context) ([]Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nodes), nil
}

func (f *fakeSource) set(gws []Gateway, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gws, f.err = gws, err
}

func (f *fakeSource) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// fakeClock is a clock a test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func gw(id, ip string, quic, api uint16) Gateway {
	return Gateway{ID: id, Addrs: []netip.Addr{netip.MustParseAddr(ip)}, QUICPort: quic, APIPort: api}
}

func twoGateways() []Gateway {
	return []Gateway{
		gw("gw1", "192.0.2.1", 7443, 8443),
		{ID: "GW2", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::2")}, QUICPort: 7444, APIPort: 8444},
	}
}

// listenBoth binds UDP and TCP on the same loopback port.
func listenBoth(t *testing.T, ip string) (net.PacketConn, net.Listener, string) {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return pc, ln, addr
		}
		pc.Close()
	}
	t.Fatal("no port free for both UDP and TCP")
	return nil, nil, ""
}

// running is a Server serving on loopback.
type running struct {
	*Server
	addr  string
	src   *fakeSource
	clock *fakeClock
	log   *syncBuf
}

// start serves srv (Source and Clock filled with fakes when nil) and
// stops it at the end of the test, checking that Serve returned
// ErrServerClosed.
func start(t *testing.T, srv *Server) *running {
	t.Helper()
	r := &running{Server: srv, clock: newClock(), log: &syncBuf{}}
	if srv.Zone == "" {
		srv.Zone = zone
	}
	if srv.Source == nil {
		r.src = &fakeSource{gws: twoGateways()}
		srv.Source = r.src
	}
	if srv.Clock == nil {
		srv.Clock = r.clock.Now
	}
	if srv.Log == nil {
		srv.Log = slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	pc, ln, addr := listenBoth(t, "127.0.0.1")
	r.addr = addr
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pc, ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v; want ErrServerClosed", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	return r
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	return m
}

// exchange sends m over network ("udp" or "tcp") and fails the test on
// a transport error.
func (r *running) exchange(t *testing.T, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 10 * time.Second}
	in, _, err := c.Exchange(m, r.addr)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	if in.Id != m.Id {
		t.Fatalf("reply id %d; want %d", in.Id, m.Id)
	}
	return in
}

// rrs renders records one per line, without TTL noise, sorted.
func rrs(list []dns.RR) []string {
	var out []string
	for _, rr := range list {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	slices.Sort(out)
	return out
}

func TestAnswers(t *testing.T) {
	r := start(t, &Server{})
	r.src.mu.Lock()
	r.src.nodes = []Node{{Name: "web-1.eu", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.3")}}}
	r.src.mu.Unlock()
	gw1, gw2 := "gw-gw1."+zone, "gw-gw2."+zone
	srvUDP := []string{
		"_tunnel._udp." + zone + " 30 IN SRV 0 10 7443 " + gw1,
		"_tunnel._udp." + zone + " 30 IN SRV 0 10 7444 " + gw2,
	}
	glue := []string{gw1 + " 30 IN A 192.0.2.1", gw2 + " 30 IN A 192.0.2.2", gw2 + " 30 IN AAAA 2001:db8::2"}
	for _, tc := range []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answer    []string
		extra     []string
		soaInAuth bool
	}{
		{name: "SRV udp", qname: "_tunnel._udp." + zone, qtype: dns.TypeSRV, answer: srvUDP, extra: glue},
		{name: "SRV tcp", qname: "_tunnel._tcp." + zone, qtype: dns.TypeSRV, answer: []string{
			"_tunnel._tcp." + zone + " 30 IN SRV 0 10 8443 " + gw1,
			"_tunnel._tcp." + zone + " 30 IN SRV 0 10 8444 " + gw2,
		}, extra: glue},
		{name: "A of a gateway", qname: gw1, qtype: dns.TypeA, answer: []string{gw1 + " 30 IN A 192.0.2.1"}},
		{name: "AAAA of a gateway", qname: gw2, qtype: dns.TypeAAAA, answer: []string{gw2 + " 30 IN AAAA 2001:db8::2"}},
		{name: "published node", qname: "web-1.eu." + zone, qtype: dns.TypeA, answer: []string{"web-1.eu." + zone + " 30 IN A 10.1.2.3"}},
		{name: "NS at the apex", qname: zone, qtype: dns.TypeNS, answer: []string{
			zone + " 30 IN NS " + gw1, zone + " 30 IN NS " + gw2}, extra: glue},
		{name: "NODATA: AAAA of an IPv4-only gateway", qname: gw1, qtype: dns.TypeAAAA, soaInAuth: true},
		{name: "NODATA: A of the SRV name", qname: "_tunnel._udp." + zone, qtype: dns.TypeA, soaInAuth: true},
		{name: "NODATA: empty non-terminal", qname: "_udp." + zone, qtype: dns.TypeSRV, soaInAuth: true},
		{name: "NODATA: empty non-terminal of a node", qname: "eu." + zone, qtype: dns.TypeA, soaInAuth: true},
		{name: "NXDOMAIN inside the zone", qname: "nope." + zone, qtype: dns.TypeA, rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "NXDOMAIN for a gone gateway", qname: "gw-gw3." + zone, qtype: dns.TypeA, rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "REFUSED outside the zone", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "REFUSED for the parent", qname: "tunnel.test.", qtype: dns.TypeSOA, rcode: dns.RcodeRefused},
		{name: "REFUSED for the root", qname: ".", qtype: dns.TypeNS, rcode: dns.RcodeRefused},
		{name: "REFUSED ANY", qname: zone, qtype: dns.TypeANY, rcode: dns.RcodeRefused},
		{name: "REFUSED AXFR", qname: zone, qtype: dns.TypeAXFR, rcode: dns.RcodeRefused},
		{name: "REFUSED IXFR", qname: zone, qtype: dns.TypeIXFR, rcode: dns.RcodeRefused},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				in := r.exchange(t, network, query(tc.qname, tc.qtype))
				if in.Rcode != tc.rcode {
					t.Fatalf("rcode %s; want %s\n%v", dns.RcodeToString[in.Rcode], dns.RcodeToString[tc.rcode], in)
				}
				if in.RecursionAvailable {
					t.Error("RA set; an authoritative-only server must not offer recursion")
				}
				if want := tc.rcode != dns.RcodeRefused; in.Authoritative != want {
					t.Errorf("AA=%v; want %v", in.Authoritative, want)
				}
				if got := rrs(in.Answer); !slices.Equal(got, tc.answer) {
					t.Errorf("answer\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.answer, "\n"))
				}
				if got := rrs(in.Extra); !slices.Equal(got, tc.extra) {
					t.Errorf("additional\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.extra, "\n"))
				}
				hasSOA := len(in.Ns) == 1 && in.Ns[0].Header().Rrtype == dns.TypeSOA
				if hasSOA != tc.soaInAuth {
					t.Errorf("authority %v; want the SOA there: %v", in.Ns, tc.soaInAuth)
				}
				if hasSOA {
					soa := in.Ns[0].(*dns.SOA)
					if soa.Hdr.Name != zone || soa.Minttl != 30 || soa.Mbox != "hostmaster."+zone || soa.Ns != gw1 {
						t.Errorf("SOA %v; want owner %s, negative TTL 30, mbox hostmaster, mname %s", soa, zone, gw1)
					}
				}
			})
		}
	}

	t.Run("SOA at the apex", func(t *testing.T) {
		in := r.exchange(t, "udp", query(zone, dns.TypeSOA))
		if in.Rcode != dns.RcodeSuccess || len(in.Answer) != 1 || in.Answer[0].Header().Rrtype != dns.TypeSOA {
			t.Fatalf("SOA query got %v", in)
		}
	})
	t.Run("case preserved and matched", func(t *testing.T) {
		name := "_TUNNEL._uDp.Prod.Tunnel.TEST."
		in := r.exchange(t, "udp", query(name, dns.TypeSRV))
		if in.Rcode != dns.RcodeSuccess || len(in.Answer) != 2 || in.Answer[0].Header().Name != name || in.Question[0].Name != name {
			t.Fatalf("mixed-case query got %v; want 2 SRV records owned by %s", in, name)
		}
	})
	t.Run("class CHAOS refused", func(t *testing.T) {
		m := query("version.bind.", dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		if in := r.exchange(t, "udp", m); in.Rcode != dns.RcodeRefused {
			t.Fatalf("CHAOS version.bind got %s; want REFUSED", dns.RcodeToString[in.Rcode])
		}
	})
	t.Run("opcode other than QUERY", func(t *testing.T) {
		m := query(zone, dns.TypeSOA)
		m.Opcode = dns.OpcodeUpdate
		if in := r.exchange(t, "udp", m); in.Rcode != dns.RcodeNotImplemented {
			t.Fatalf("UPDATE got %s; want NOTIMP", dns.RcodeToString[in.Rcode])
		}
	})
	t.Run("EDNS version 1", func(t *testing.T) {
		m := query(zone, dns.TypeSOA)
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
		if in := r.exchange(t, "udp", m); in.Rcode != dns.RcodeBadVers {
			t.Fatalf("EDNS version 1 got rcode %d; want BADVERS (16)", in.Rcode)
		}
	})
	t.Run("RD echoed, recursion still not offered", func(t *testing.T) {
		m := query("example.com.", dns.TypeA)
		m.RecursionDesired = true
		in := r.exchange(t, "udp", m)
		if !in.RecursionDesired || in.RecursionAvailable || in.Rcode != dns.RcodeRefused {
			t.Fatalf("RD query outside the zone got RD=%v RA=%v %s; want RD=true RA=false REFUSED",
				in.RecursionDesired, in.RecursionAvailable, dns.RcodeToString[in.Rcode])
		}
	})
}

// manyGateways returns n gateways with IPv4 and IPv6 addresses.
func manyGateways(n int) []Gateway {
	var out []Gateway
	for i := range n {
		out = append(out, Gateway{ID: fmt.Sprintf("gateway-number-%02d", i),
			Addrs:    []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))},
			QUICPort: uint16(7000 + i), APIPort: uint16(8000 + i)})
	}
	return out
}

func TestTruncationAndTCPRetry(t *testing.T) {
	r := start(t, &Server{})
	r.src.set(manyGateways(40), nil)
	name := "_tunnel._udp." + zone

	// Plain UDP (512 bytes): truncated, TC set, some answers dropped.
	udp := r.exchange(t, "udp", query(name, dns.TypeSRV))
	if !udp.Truncated {
		t.Fatalf("40 SRV records over 512-byte UDP came back without TC (%d answers)", len(udp.Answer))
	}
	if len(udp.Answer) >= 40 {
		t.Errorf("truncated answer holds %d records; want fewer than 40", len(udp.Answer))
	}
	udp.Compress = true
	if packed, _ := udp.Pack(); len(packed) > 512 {
		t.Errorf("UDP answer is %d bytes; want at most 512", len(packed))
	}

	// The client's retry over TCP gets them all, with the glue.
	tcp := r.exchange(t, "tcp", query(name, dns.TypeSRV))
	if tcp.Truncated || len(tcp.Answer) != 40 || len(tcp.Extra) != 80 {
		t.Fatalf("TCP retry: TC=%v, %d answers, %d additional; want no TC, 40 and 80", tcp.Truncated, len(tcp.Answer), len(tcp.Extra))
	}

	// EDNS0 asking for 4096 is capped at 1232: 40 answers do not fit.
	m := query(name, dns.TypeSRV)
	m.SetEdns0(4096, false)
	in := r.exchange(t, "udp", m)
	in.Compress = true
	if packed, _ := in.Pack(); !in.Truncated || len(packed) > DefaultMaxUDPSize {
		t.Fatalf("EDNS0 4096, 40 gateways: TC=%v, %d bytes; want TC, at most %d bytes", in.Truncated, len(packed), DefaultMaxUDPSize)
	}

	// 20 answers fit in 1232 bytes once the additional section goes: no
	// TC then.
	r.src.set(manyGateways(20), nil)
	r.clock.Advance(time.Minute)
	in = r.exchange(t, "udp", m)
	in.Compress = true
	packed, _ := in.Pack()
	if in.Truncated || len(in.Answer) != 20 || len(packed) > DefaultMaxUDPSize {
		t.Fatalf("EDNS0 4096, 20 gateways: TC=%v, %d answers, %d bytes; want no TC, 20 answers, at most %d bytes", in.Truncated, len(in.Answer), len(packed), DefaultMaxUDPSize)
	}
	if in.IsEdns0() == nil {
		t.Error("an EDNS0 query got a reply without OPT")
	}
	if len(rrs(in.Extra)) != 0 {
		t.Errorf("additional section kept %d records past the size; want it dropped before the answers", len(rrs(in.Extra)))
	}

	// Few gateways: everything fits in 512 bytes, no TC, glue included.
	r.src.set(twoGateways(), nil)
	r.clock.Advance(time.Minute)
	small := r.exchange(t, "udp", query(name, dns.TypeSRV))
	if small.Truncated || len(small.Answer) != 2 || len(small.Extra) != 3 {
		t.Fatalf("2 gateways over UDP: TC=%v, %d answers, %d additional; want no TC, 2, 3", small.Truncated, len(small.Answer), len(small.Extra))
	}
}

func TestRateLimitPerSource(t *testing.T) {
	r := start(t, &Server{RateLimit: 1, RateBurst: 3})
	q := query("_tunnel._udp."+zone, dns.TypeSRV)
	for i := range 3 {
		if in := r.exchange(t, "udp", q); in.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d within the burst: %s", i, dns.RcodeToString[in.Rcode])
		}
	}
	// Over the burst (the clock is frozen, so no token comes back): UDP
	// is dropped, TCP refused.
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	if in, _, err := c.Exchange(q, r.addr); err == nil {
		t.Fatalf("UDP query over the rate got %v; want no answer", in)
	}
	if in := r.exchange(t, "tcp", q); in.Rcode != dns.RcodeRefused {
		t.Fatalf("TCP query over the rate got %s; want REFUSED", dns.RcodeToString[in.Rcode])
	}
	if got := r.Stats().RateLimited; got != 2 {
		t.Errorf("Stats().RateLimited = %d; want 2", got)
	}
	if !strings.Contains(r.log.String(), "per-source rate limit") {
		t.Errorf("no log line about the rate limit:\n%s", r.log)
	}

	// Another source has its own bucket.
	c2 := &dns.Client{Net: "udp", Timeout: 10 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
	if in, _, err := c2.Exchange(q, r.addr); err != nil || in.Rcode != dns.RcodeSuccess {
		t.Fatalf("query from 127.0.0.2 while 127.0.0.1 is limited: %v %v", in, err)
	}

	// Time refills the bucket.
	r.clock.Advance(10 * time.Second)
	if in := r.exchange(t, "udp", q); in.Rcode != dns.RcodeSuccess {
		t.Fatalf("query after the bucket refilled: %s", dns.RcodeToString[in.Rcode])
	}
}

func TestSourceLimiterForgetsIdleSources(t *testing.T) {
	l := newSourceLimiter(10, 10)
	now := time.Unix(1000, 0)
	for i := range maxRateSources {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if l.size() != maxRateSources {
		t.Fatalf("size %d; want %d", l.size(), maxRateSources)
	}
	// Full: an unknown source shares the overflow bucket until the
	// others are idle long enough to be forgotten.
	later := now.Add(2 * time.Second)
	if !l.allow(netip.MustParseAddr("192.0.2.9"), later) {
		t.Fatal("a new source was refused after the others went idle")
	}
	if l.size() != 1 {
		t.Errorf("after the sweep %d sources are remembered; want 1", l.size())
	}
	// IPv6 sources count per /64.
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2::ffff")
	for range 10 {
		l.allow(a, later)
	}
	if l.allow(b, later) {
		t.Error("a second address of the same IPv6 /64 got its own bucket")
	}
}

func TestCacheSparesTheSource(t *testing.T) {
	r := start(t, &Server{RateLimit: rate.Inf})
	q := query("_tunnel._udp."+zone, dns.TypeSRV)
	for range 50 {
		r.exchange(t, "udp", q)
	}
	if n := r.src.callCount(); n != 1 {
		t.Fatalf("50 queries within CacheFor asked the source %d times; want 1", n)
	}
	// A gateway that stops heartbeating leaves the answer once the cache
	// expires.
	r.src.set(twoGateways()[:1], nil)
	if in := r.exchange(t, "udp", q); len(in.Answer) != 2 {
		t.Fatalf("within CacheFor: %d answers; want the cached 2", len(in.Answer))
	}
	r.clock.Advance(DefaultCacheFor)
	in := r.exchange(t, "udp", q)
	if len(in.Answer) != 1 {
		t.Fatalf("after CacheFor: %d answers; want 1", len(in.Answer))
	}
	if n := r.src.callCount(); n != 2 {
		t.Errorf("source asked %d times; want 2", n)
	}
	if in := r.exchange(t, "udp", query("gw-gw2."+zone, dns.TypeA)); in.Rcode != dns.RcodeNameError {
		t.Errorf("the gone gateway's name: %s; want NXDOMAIN", dns.RcodeToString[in.Rcode])
	}
}

func TestSourceFailure(t *testing.T) {
	t.Run("stale answers, then SERVFAIL", func(t *testing.T) {
		r := start(t, &Server{RateLimit: rate.Inf})
		q := query("_tunnel._udp."+zone, dns.TypeSRV)
		first := r.exchange(t, "udp", q)
		r.src.set(nil, errors.New("store down"))
		r.clock.Advance(time.Minute)
		in := r.exchange(t, "udp", q)
		if in.Rcode != dns.RcodeSuccess || len(in.Answer) != 2 {
			t.Fatalf("source failing for 1 min: %s with %d answers; want the last good 2", dns.RcodeToString[in.Rcode], len(in.Answer))
		}
		if in.Ns != nil || first.Answer[0].String() != in.Answer[0].String() {
			t.Errorf("stale answer differs: %v vs %v", in.Answer, first.Answer)
		}
		r.clock.Advance(DefaultMaxStale)
		if in := r.exchange(t, "udp", q); in.Rcode != dns.RcodeServerFailure {
			t.Fatalf("source failing past MaxStale: %s; want SERVFAIL", dns.RcodeToString[in.Rcode])
		}
		if n := strings.Count(r.log.String(), "cannot read the zone's records"); n != 1 {
			t.Errorf("the failure was logged %d times; want once:\n%s", n, r.log)
		}
		r.src.set(twoGateways(), nil)
		r.clock.Advance(time.Minute)
		if in := r.exchange(t, "udp", q); in.Rcode != dns.RcodeSuccess || len(in.Answer) != 2 {
			t.Fatalf("after the source recovered: %v", in)
		}
		if !strings.Contains(r.log.String(), "can be read again") {
			t.Errorf("recovery not logged:\n%s", r.log)
		}
	})
	t.Run("never answered", func(t *testing.T) {
		src := &fakeSource{err: errors.New("store down")}
		r := start(t, &Server{Source: src})
		if in := r.exchange(t, "udp", query(zone, dns.TypeSOA)); in.Rcode != dns.RcodeServerFailure {
			t.Fatalf("no records ever: %s; want SERVFAIL", dns.RcodeToString[in.Rcode])
		}
		// Outside the zone is refused without asking the source.
		if in := r.exchange(t, "udp", query("example.com.", dns.TypeA)); in.Rcode != dns.RcodeRefused {
			t.Fatalf("outside the zone: %s; want REFUSED", dns.RcodeToString[in.Rcode])
		}
	})
	t.Run("a panicking source", func(t *testing.T) {
		r := start(t, &Server{Source: panicSource{}})
		if in := r.exchange(t, "udp", query(zone, dns.TypeSOA)); in.Rcode != dns.RcodeServerFailure {
			t.Fatalf("panicking source: %s; want SERVFAIL", dns.RcodeToString[in.Rcode])
		}
		if !strings.Contains(r.log.String(), "recovered a panic") {
			t.Errorf("the panic was not reported:\n%s", r.log)
		}
	})
}

type panicSource struct{}

func (panicSource) Gateways(context.Context) ([]Gateway, error) { panic("boom in the store") }
func (panicSource) Nodes(context.Context) ([]Node, error)       { return nil, nil }

func TestSerialFollowsChanges(t *testing.T) {
	r := start(t, &Server{RateLimit: rate.Inf})
	serial := func() uint32 {
		t.Helper()
		in := r.exchange(t, "udp", query(zone, dns.TypeSOA))
		return in.Answer[0].(*dns.SOA).Serial
	}
	s1 := serial()
	r.clock.Advance(time.Minute)
	if s2 := serial(); s2 != s1 {
		t.Errorf("serial moved from %d to %d with no change", s1, s2)
	}
	r.src.set(twoGateways()[:1], nil)
	r.clock.Advance(time.Minute)
	if s3 := serial(); s3 <= s1 {
		t.Errorf("serial %d after a change; want more than %d", s3, s1)
	}
}

func TestNameServersOption(t *testing.T) {
	r := start(t, &Server{NameServers: []string{"ns1", "ns2.example.net."}})
	in := r.exchange(t, "udp", query(zone, dns.TypeNS))
	want := []string{zone + " 30 IN NS ns1." + zone, zone + " 30 IN NS ns2.example.net."}
	if got := rrs(in.Answer); !slices.Equal(got, want) {
		t.Fatalf("NS %v; want %v", got, want)
	}
}

func TestGatewayNames(t *testing.T) {
	for id, want := range map[string]string{
		"gw1":                    "gw-gw1",
		"GW.Example.COM":         "gw-gw-example-com",
		"a_b c":                  "gw-a-b-c",
		strings.Repeat("x", 100): "gw-" + strings.Repeat("x", 60),
		"":                       "",
	} {
		if got := GatewayLabel(id); got != want {
			t.Errorf("GatewayLabel(%q) = %q; want %q", id, got, want)
		}
	}
}

func TestBuildZoneSkips(t *testing.T) {
	z, skipped := buildZone(zoneOptions{apex: zone, ttl: 30}, []Gateway{
		{ID: "wild", Addrs: []netip.Addr{netip.IPv4Unspecified()}, QUICPort: 1},
		{ID: "named", Host: "gw.example.net", QUICPort: 7443},
		{ID: "a.b", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, QUICPort: 1},
		{ID: "a-b", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.2")}, QUICPort: 2},
	}, []Node{{Name: "gw-x", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, {Name: "bad_name"}})
	got := strings.Join(skipped, "\n")
	for _, want := range []string{"gateway wild advertises no usable address", "gateway a.b: its name gw-a-b." + zone + " is taken", "node gw-x", "node bad_name"} {
		if !strings.Contains(got, want) {
			t.Errorf("skipped:\n%s\nlacks %q", got, want)
		}
	}
	l := z.lookup("_tunnel._udp."+zone, dns.TypeSRV)
	var targets []string
	for _, rr := range l.answer {
		targets = append(targets, rr.(*dns.SRV).Target)
	}
	slices.Sort(targets)
	if want := []string{"gw-a-b." + zone, "gw.example.net."}; !slices.Equal(targets, want) {
		t.Errorf("SRV targets %v; want %v", targets, want)
	}
}

func TestServeLifecycle(t *testing.T) {
	t.Run("Close before Serve", func(t *testing.T) {
		s := &Server{Zone: zone, Source: &fakeSource{}}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		pc, ln, _ := listenBoth(t, "127.0.0.1")
		if err := s.Serve(pc, ln); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve after Close: %v; want ErrServerClosed", err)
		}
		if _, err := pc.WriteTo([]byte("x"), pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve after Close left the UDP socket open: %v", err)
		}
	})
	t.Run("Shutdown closes open connections", func(t *testing.T) {
		s := &Server{Zone: zone, Source: &fakeSource{gws: twoGateways()}, IdleTimeout: time.Hour, Log: slog.New(slog.DiscardHandler)}
		pc, ln, addr := listenBoth(t, "127.0.0.1")
		done := make(chan error, 1)
		go func() { done <- s.Serve(pc, ln) }()
		c, err := dns.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMsg(query(zone, dns.TypeSOA)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadMsg(); err != nil {
			t.Fatal(err)
		}
		// The connection now waits (up to an hour) for its next query.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown with an idle connection open: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve: %v; want ErrServerClosed", err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.ReadMsg(); err == nil {
			t.Fatal("the connection is still open after Shutdown")
		}
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
	})
	t.Run("bad zone", func(t *testing.T) {
		pc, ln, _ := listenBoth(t, "127.0.0.1")
		err := (&Server{Zone: "", Source: &fakeSource{}}).Serve(pc, ln)
		if err == nil || !strings.Contains(err.Error(), "--dns-zone") {
			t.Fatalf("empty zone: %v; want an error naming --dns-zone", err)
		}
	})
	t.Run("listener failing under the server", func(t *testing.T) {
		s := &Server{Zone: zone, Source: &fakeSource{}, Log: slog.New(slog.DiscardHandler)}
		pc, ln, _ := listenBoth(t, "127.0.0.1")
		done := make(chan error, 1)
		go func() { done <- s.Serve(pc, ln) }()
		waitFor(t, "the server to start", func() bool { return !s.closing() && s.Stats().TCPConns == 0 && s.tcpStarted() })
		ln.Close() // closed by someone else: Serve must end, not spin
		err := <-done
		if err == nil || errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve after its listener was closed under it: %v; want the listener's error", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// tcpStarted reports whether Serve has taken its listener (tests only).
func (s *Server) tcpStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp != nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
