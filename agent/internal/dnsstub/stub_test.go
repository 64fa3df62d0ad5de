package dnsstub

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testLog writes the stub's log to the test's log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var testNames = map[string]netip.Addr{
	"orders-db": netip.MustParseAddr("127.0.0.7"),
	"cache6":    netip.MustParseAddr("::1"),
	"any-addr":  netip.MustParseAddr("0.0.0.0"),
}

// startStub starts a stub for cluster prod on a free port of 127.0.0.1.
func startStub(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", Cluster: "prod", Names: testNames, Log: testLog(t)}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func (s *Server) addrOf(network string) string {
	u, tc := s.Addr()
	if network == "tcp" {
		return tc.String()
	}
	return u.String()
}

// ask sends one query with a real miekg/dns client and fails the test if
// there is no answer.
func ask(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r, err := tryAsk(s, network, name, qtype, nil)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func tryAsk(s *Server, network, name string, qtype uint16, mod func(*dns.Client, *dns.Msg)) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 10 * time.Second}
	m := new(dns.Msg).SetQuestion(name, qtype)
	if mod != nil {
		mod(c, m)
	}
	r, _, err := c.Exchange(m, s.addrOf(network))
	return r, err
}

func TestAnswers(t *testing.T) {
	s := startStub(t, nil)
	type want struct {
		rcode  int
		answer string // "" for none; else the record's value
		soa    bool   // an SOA in the authority section
	}
	cases := []struct {
		name  string
		qtype uint16
		want  want
	}{
		{"orders-db.prod.tunnel.", dns.TypeA, want{dns.RcodeSuccess, "127.0.0.7", false}},
		{"ORDERS-DB.Prod.TUNNEL.", dns.TypeA, want{dns.RcodeSuccess, "127.0.0.7", false}},
		{"orders-db.prod.tunnel.", dns.TypeAAAA, want{dns.RcodeSuccess, "", true}},
		{"orders-db.prod.tunnel.", dns.TypeMX, want{dns.RcodeSuccess, "", true}},
		{"cache6.prod.tunnel.", dns.TypeAAAA, want{dns.RcodeSuccess, "::1", false}},
		{"cache6.prod.tunnel.", dns.TypeA, want{dns.RcodeSuccess, "", true}},
		{"any-addr.prod.tunnel.", dns.TypeA, want{dns.RcodeSuccess, "127.0.0.1", false}},
		{"nosuch.prod.tunnel.", dns.TypeA, want{dns.RcodeNameError, "", true}},
		{"a.orders-db.prod.tunnel.", dns.TypeA, want{dns.RcodeNameError, "", true}},
		{"prod.tunnel.", dns.TypeA, want{dns.RcodeSuccess, "", true}},
		{"orders-db.staging.tunnel.", dns.TypeA, want{dns.RcodeRefused, "", false}},
		{"example.com.", dns.TypeA, want{dns.RcodeRefused, "", false}},
		{"tunnel.", dns.TypeA, want{dns.RcodeRefused, "", false}},
		{"orders-db.prod.tunnel.example.com.", dns.TypeA, want{dns.RcodeRefused, "", false}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, c := range cases {
			t.Run(network+"/"+c.name+"/"+dns.TypeToString[c.qtype], func(t *testing.T) {
				r := ask(t, s, network, c.name, c.qtype)
				if r.Rcode != c.want.rcode {
					t.Fatalf("rcode %s, want %s:\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.want.rcode], r)
				}
				if r.Question[0].Name != c.name {
					t.Errorf("question echoed as %q, want the client's %q", r.Question[0].Name, c.name)
				}
				inZone := c.want.rcode != dns.RcodeRefused
				if r.Authoritative != inZone {
					t.Errorf("AA = %v, want %v", r.Authoritative, inZone)
				}
				switch {
				case c.want.answer == "" && len(r.Answer) != 0:
					t.Errorf("want no answer records, got %v", r.Answer)
				case c.want.answer != "":
					if len(r.Answer) != 1 {
						t.Fatalf("want one answer, got %v", r.Answer)
					}
					rr := r.Answer[0]
					var got string
					switch rr := rr.(type) {
					case *dns.A:
						got = rr.A.String()
					case *dns.AAAA:
						got = rr.AAAA.String()
					}
					if got != c.want.answer || rr.Header().Rrtype != c.qtype {
						t.Errorf("answer %v, want %s %s", rr, dns.TypeToString[c.qtype], c.want.answer)
					}
					if rr.Header().Name != c.name || rr.Header().Ttl != TTL {
						t.Errorf("answer %v: want owner %s and TTL %d", rr, c.name, TTL)
					}
				}
				hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
				if hasSOA != c.want.soa {
					t.Errorf("authority %v, want an SOA: %v", r.Ns, c.want.soa)
				}
				if hasSOA {
					soa := r.Ns[0].(*dns.SOA)
					if soa.Hdr.Name != "prod.tunnel." || soa.Minttl != TTL || soa.Hdr.Ttl != TTL {
						t.Errorf("SOA %v: want owner prod.tunnel. with TTL and minimum %d", soa, TTL)
					}
				}
			})
		}
	}
	if st := s.Stats(); st.Refused == 0 || st.Answered == 0 || st.Forwarded != 0 {
		t.Errorf("stats %+v: want answered and refused counted, nothing forwarded", st)
	}
}

func TestSOAAtApexAndEDNS(t *testing.T) {
	s := startStub(t, nil)
	r := ask(t, s, "udp", "Prod.Tunnel.", dns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("want the SOA as the answer, got %v", r)
	}
	// EDNS0: the answer carries our OPT; without it, no OPT.
	r, err := tryAsk(s, "udp", "orders-db.prod.tunnel.", dns.TypeA, func(_ *dns.Client, m *dns.Msg) { m.SetEdns0(4096, true) })
	if err != nil {
		t.Fatal(err)
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != ednsSize || !opt.Do() {
		t.Errorf("want an OPT with size %d and DO echoed, got %v", ednsSize, r)
	}
	if r := ask(t, s, "udp", "orders-db.prod.tunnel.", dns.TypeA); r.IsEdns0() != nil {
		t.Errorf("an OPT in the answer to a query without EDNS0: %v", r)
	}
	// EDNS version 1: BADVERS.
	r, err = tryAsk(s, "udp", "orders-db.prod.tunnel.", dns.TypeA, func(_ *dns.Client, m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeBadVers || len(r.Answer) != 0 {
		t.Errorf("EDNS version 1: want BADVERS and no answer, got %v", r)
	}
}

func TestSetNames(t *testing.T) {
	s := startStub(t, nil)
	if err := s.SetNames(map[string]netip.Addr{"billing": netip.MustParseAddr("127.0.0.9")}); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, s, "udp", "billing.prod.tunnel.", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.9" {
		t.Errorf("after SetNames: want billing at 127.0.0.9, got %v", r)
	}
	if r := ask(t, s, "udp", "orders-db.prod.tunnel.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("after SetNames: orders-db is gone, want NXDOMAIN, got %v", r)
	}
	err := s.SetNames(map[string]netip.Addr{"bad name": netip.MustParseAddr("127.0.0.9")})
	if err == nil || !errors.Is(err, ErrConfig) {
		t.Errorf("SetNames with a space in a name: want a configuration error, got %v", err)
	}
}

func TestValidation(t *testing.T) {
	cases := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Listen = "0.0.0.0:53" }, "dns.listen 0.0.0.0:53: the agent's DNS answers on a loopback address only: use 127.0.0.153:53"},
		{func(c *Config) { c.Listen = "10.1.2.3:53" }, "dns.listen 10.1.2.3:53: the agent's DNS answers on a loopback address only: use 127.0.0.153:53"},
		{func(c *Config) { c.Listen = "localhost:53" }, "dns.listen localhost:53: not an IP:PORT: use a loopback address and a port, for example 127.0.0.153:53"},
		{func(c *Config) { c.Listen = "" }, "dns.listen: give the loopback IP:PORT the agent's DNS answers on, for example 127.0.0.153:53"},
		{func(c *Config) { c.Upstream = "dns.example.com" }, "dns.upstream dns.example.com: not an IP address or IP:PORT: give the resolver's address, for example 10.0.0.2 or 10.0.0.2:53, or leave it empty to refuse names outside the cluster"},
		{func(c *Config) { c.Listen = "127.0.0.153:53"; c.Upstream = "127.0.0.153" }, "dns.upstream 127.0.0.153: this would forward queries to the stub itself: name another resolver or leave dns.upstream empty"},
		{func(c *Config) { c.Cluster = "" }, "cluster: the DNS stub needs the agent's cluster name: cluster name is empty"},
		{func(c *Config) { c.Names = map[string]netip.Addr{"x": {}} }, "listen x: the listener has no IP address to answer with"},
	}
	for _, c := range cases {
		cfg := Config{Listen: "127.0.0.1:0", Cluster: "prod", Names: testNames}
		c.mod(&cfg)
		s, err := Start(cfg)
		if err == nil {
			_ = s.Close()
			t.Errorf("want %q, got no error", c.want)
			continue
		}
		var ce *ConfigError
		if err.Error() != c.want || !errors.Is(err, ErrConfig) || !errors.As(err, &ce) || !strings.HasPrefix(c.want, ce.Key) {
			t.Errorf("got  %q\nwant %q", err, c.want)
		}
	}
	// The port is taken: a clear error, not a half-started stub.
	s := startStub(t, nil)
	_, err := Start(Config{Listen: s.addrOf("udp"), Cluster: "prod", Log: testLog(t)})
	if err == nil || !strings.Contains(err.Error(), "cannot listen there") {
		t.Errorf("a taken port: want \"cannot listen there\", got %v", err)
	}
}

func TestCloseTwiceAndPortFreed(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", Cluster: "prod", Names: testNames, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	// A silent TCP client must not hold Close up.
	c, err := net.Dial("tcp", s.addrOf("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask(t, s, "udp", "orders-db.prod.tunnel.", dns.TypeA)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	// Both sockets are released: the same address can be bound again.
	s2, err := Start(Config{Listen: s.addrOf("udp"), Cluster: "prod", Log: testLog(t)})
	if err != nil {
		t.Fatalf("the address is still taken after Close: %v", err)
	}
	_ = s2.Close()
}

// TestTruncation: an answer too big for UDP comes with TC and fits the
// client's size; over TCP it comes whole. Big answers only come from an
// upstream (the stub's own are one record), so this uses one.
func TestTruncation(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for i := range 20 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 200))}})
		}
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			m.Truncate(dns.MinMsgSize)
		}
		_ = w.WriteMsg(m)
	})
	s := startStub(t, func(c *Config) { c.Upstream = up })
	for _, size := range []uint16{0, 1232, 4096} {
		r, err := tryAsk(s, "udp", "big.example.", dns.TypeTXT, func(c *dns.Client, m *dns.Msg) {
			if size != 0 {
				m.SetEdns0(size, false)
			}
		})
		if err != nil {
			t.Fatalf("UDP, EDNS size %d: %v", size, err)
		}
		packed, err := r.Pack()
		if err != nil {
			t.Fatal(err)
		}
		limit := max(512, min(int(size), ednsSize))
		if !r.Truncated || len(packed) > limit || len(r.Answer) >= 20 {
			t.Errorf("UDP, EDNS size %d: want TC and at most %d bytes, got TC=%v, %d bytes, %d records", size, limit, r.Truncated, len(packed), len(r.Answer))
		}
	}
	r := ask(t, s, "tcp", "big.example.", dns.TypeTXT)
	if r.Truncated || len(r.Answer) != 20 {
		t.Errorf("TCP: want all 20 records and no TC, got TC=%v and %d records", r.Truncated, len(r.Answer))
	}
}

// startUpstream runs a test resolver on UDP and TCP of one free port and
// returns its address.
func startUpstream(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, ln, err := bind(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { _ = srv.ActivateAndServe() })
		<-started
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			_ = srv.Shutdown()
		}
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

func TestUpstream(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		mu.Lock()
		asked = append(asked, r.Question[0].Name)
		mu.Unlock()
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		if r.Question[0].Name == "nx.example." {
			m.Rcode = dns.RcodeNameError
		} else {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 10)}}
		}
		_ = w.WriteMsg(m)
	})
	s := startStub(t, func(c *Config) { c.Upstream = up })
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, s, network, "WWW.Example.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.10" || r.Authoritative {
			t.Errorf("%s: want the upstream's 192.0.2.10, not authoritative, got %v", network, r)
		}
		if r.Question[0].Name != "WWW.Example." {
			t.Errorf("%s: question echoed as %q, want the client's case", network, r.Question[0].Name)
		}
		if r := ask(t, s, network, "nx.example.", dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: want the upstream's NXDOMAIN, got %v", network, r)
		}
		// The cluster's names are never forwarded.
		if r := ask(t, s, network, "nosuch.prod.tunnel.", dns.TypeA); r.Rcode != dns.RcodeNameError || !r.Authoritative {
			t.Errorf("%s: want the stub's own NXDOMAIN, got %v", network, r)
		}
	}
	mu.Lock()
	for _, n := range asked {
		if strings.HasSuffix(strings.ToLower(n), "prod.tunnel.") {
			t.Errorf("the upstream was asked %q, a name of the cluster's zone", n)
		}
	}
	mu.Unlock()
	if st := s.Stats(); st.Forwarded != 4 {
		t.Errorf("stats %+v: want 4 forwarded", st)
	}
}

// TestUpstreamFails: an upstream that does not answer, or is not there,
// gives SERVFAIL after the timeout; the stub goes on answering.
func TestUpstreamFails(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, up := range []string{silent.LocalAddr().String()} {
		s := startStub(t, func(c *Config) { c.Upstream = up; c.UpstreamTimeout = 300 * time.Millisecond })
		for _, network := range []string{"udp", "tcp"} {
			r := ask(t, s, network, "www.example.", dns.TypeA)
			if r.Rcode != dns.RcodeServerFailure {
				t.Errorf("%s, upstream %s silent: want SERVFAIL, got %v", network, up, r)
			}
			if r := ask(t, s, network, "orders-db.prod.tunnel.", dns.TypeA); len(r.Answer) != 1 {
				t.Errorf("%s: the zone's answer after a failed forward: %v", network, r)
			}
		}
		if st := s.Stats(); st.Failed != 2 {
			t.Errorf("stats %+v: want 2 failed", st)
		}
	}
}

// fakeClock is the rate limiter's clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateLimitPerSource(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := startStub(t, func(c *Config) { c.RatePerSecond = 1; c.Burst = 3; c.Now = clk.Now })
	from := func(src string) func(*dns.Client, *dns.Msg) {
		return func(c *dns.Client, _ *dns.Msg) {
			c.Timeout = 500 * time.Millisecond // a dropped query: how long to wait for nothing
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}
		}
	}
	for i := range 3 {
		if _, err := tryAsk(s, "udp", "orders-db.prod.tunnel.", dns.TypeA, from("127.0.0.1")); err != nil {
			t.Fatalf("query %d within the burst: %v", i+1, err)
		}
	}
	if r, err := tryAsk(s, "udp", "orders-db.prod.tunnel.", dns.TypeA, from("127.0.0.1")); err == nil {
		t.Fatalf("query 4 beyond the burst was answered: %v", r)
	}
	// Another source has its own bucket.
	if _, err := tryAsk(s, "udp", "orders-db.prod.tunnel.", dns.TypeA, from("127.0.0.2")); err != nil {
		t.Fatalf("another source is limited too: %v", err)
	}
	// A second later, one more token.
	clk.Add(time.Second)
	if _, err := tryAsk(s, "udp", "orders-db.prod.tunnel.", dns.TypeA, from("127.0.0.1")); err != nil {
		t.Fatalf("after a second, one more query: %v", err)
	}
	if st := s.Stats(); st.RateLimited != 1 {
		t.Errorf("stats %+v: want 1 rate-limited", st)
	}
}

func TestLimiterTableBounded(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newLimiter(1, 2, clk.Now)
	for i := range maxSources + 10 {
		l.allow(netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := len(l.buckets); n > maxSources {
		t.Fatalf("%d sources remembered, want at most %d", n, maxSources)
	}
	clk.Add(time.Minute) // every bucket refills: the table can be pruned
	if !l.allow(netip.MustParseAddr("10.9.9.9")) {
		t.Fatal("a new source after the others went idle was refused")
	}
}

func TestPanicIsContained(t *testing.T) {
	var buf syncBuffer
	s := startStub(t, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&buf, nil)) })
	names := s.names.Load()
	s.names.Store(nil) // the handler dereferences it: a panic
	for _, network := range []string{"udp", "tcp"} {
		if r, err := tryAsk(s, network, "orders-db.prod.tunnel.", dns.TypeA, func(c *dns.Client, _ *dns.Msg) { c.Timeout = 500 * time.Millisecond }); err == nil {
			t.Errorf("%s: a query that panicked was answered: %v", network, r)
		}
	}
	s.names.Store(names)
	for _, network := range []string{"udp", "tcp"} {
		if r := ask(t, s, network, "orders-db.prod.tunnel.", dns.TypeA); len(r.Answer) != 1 {
			t.Errorf("%s after a panic: %v", network, r)
		}
	}
	if !strings.Contains(buf.String(), "where=\"dns stub query\"") {
		t.Errorf("the panic was not logged by pkg/panics:\n%s", buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }
