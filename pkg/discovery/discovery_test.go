package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const zone = "prod.tunnel.test."

// testDNS is a small authoritative server for the tests: SRV records at
// _tunnel._udp.ZONE, addresses, optional glue, and a forced rcode.
type testDNS struct {
	addr string

	mu      sync.Mutex
	srv     []*dns.SRV
	addrs   map[string][]netip.Addr
	glue    bool
	rcode   int // forced when not 0
	ttl     uint32
	queries []string // "udp SRV name"
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	ts := &testDNS{addrs: map[string][]netip.Addr{}, glue: true, ttl: 30}
	var pc net.PacketConn
	var ln net.Listener
	for range 50 {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no port free for both UDP and TCP")
	}
	ts.addr = pc.LocalAddr().String()
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: ts}, {Listener: ln, Handler: ts}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() {
			s.Shutdown()
			<-done
		})
	}
	return ts
}

func (ts *testDNS) set(f func(ts *testDNS)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	f(ts)
}

// addGateway publishes a gateway named n with port and addresses.
func (ts *testDNS) addGateway(n string, prio, weight, port uint16, addrs ...string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	target := n + "." + zone
	ts.srv = append(ts.srv, &dns.SRV{Hdr: dns.RR_Header{Name: "_tunnel._udp." + zone, Rrtype: dns.TypeSRV, Class: dns.ClassINET},
		Priority: prio, Weight: weight, Port: port, Target: target})
	for _, a := range addrs {
		ts.addrs[target] = append(ts.addrs[target], netip.MustParseAddr(a))
	}
}

func (ts *testDNS) queryLog() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.queries)
}

func (ts *testDNS) addrRRs(name string) []dns.RR {
	var out []dns.RR
	for _, a := range ts.addrs[name] {
		h := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: ts.ttl}
		if a.Is4() {
			h.Rrtype = dns.TypeA
			out = append(out, &dns.A{Hdr: h, A: a.AsSlice()})
		} else {
			h.Rrtype = dns.TypeAAAA
			out = append(out, &dns.AAAA{Hdr: h, AAAA: a.AsSlice()})
		}
	}
	return out
}

func (ts *testDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	q := r.Question[0]
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	ts.queries = append(ts.queries, network+" "+dns.TypeToString[q.Qtype]+" "+q.Name)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	name := strings.ToLower(q.Name)
	switch {
	case ts.rcode != 0:
		m.Rcode = ts.rcode
	case name == "_tunnel._udp."+zone && q.Qtype == dns.TypeSRV:
		if len(ts.srv) == 0 {
			m.Rcode = dns.RcodeNameError
		}
		for _, s := range ts.srv {
			c := dns.Copy(s).(*dns.SRV)
			c.Hdr.Ttl = ts.ttl
			m.Answer = append(m.Answer, c)
			if ts.glue {
				m.Extra = append(m.Extra, ts.addrRRs(s.Target)...)
			}
		}
	case q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA:
		if _, ok := ts.addrs[name]; !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range ts.addrRRs(name) {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	default:
		m.Rcode = dns.RcodeNameError
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	if network == "udp" {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func TestParseGateway(t *testing.T) {
	for in, want := range map[string]struct {
		zone string
		ok   bool
		err  string
	}{
		"srv:prod.tunnel.test":            {zone: zone, ok: true},
		" srv:Prod.Tunnel.Test. ":         {zone: zone, ok: true},
		"gw1:8443,gw2:8443":               {},
		"127.0.0.1:8443":                  {},
		"srv:":                            {ok: true, err: "want srv:ZONE"},
		"srv:host:53":                     {ok: true, err: "want srv:ZONE"},
		"srv:a,b":                         {ok: true, err: "want srv:ZONE"},
		"srv:" + strings.Repeat("a", 300): {ok: true, err: "want srv:ZONE"},
	} {
		z, ok, err := ParseGateway(in)
		if z != want.zone || ok != want.ok || (err == nil) != (want.err == "") || err != nil && !strings.Contains(err.Error(), want.err) {
			t.Errorf("ParseGateway(%q) = %q, %v, %v; want %q, %v, error with %q", in, z, ok, err, want.zone, want.ok, want.err)
		}
	}
}

func TestResolveWithGlue(t *testing.T) {
	ts := newTestDNS(t)
	ts.addGateway("gw-a", 0, 10, 7443, "192.0.2.1", "2001:db8::1")
	ts.addGateway("gw-b", 0, 10, 7444, "2001:db8::2")
	ts.set(func(ts *testDNS) { ts.ttl = 42 })
	gws, ttl, err := Resolve(context.Background(), zone, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(gws)
	if want := []string{"192.0.2.1:7443", "[2001:db8::2]:7444"}; !slices.Equal(gws, want) {
		t.Errorf("gateways %v; want %v (IPv4 first when a target has both)", gws, want)
	}
	if ttl != 42*time.Second {
		t.Errorf("ttl %v; want 42s", ttl)
	}
	if q := ts.queryLog(); len(q) != 1 || q[0] != "udp SRV _tunnel._udp."+zone {
		t.Errorf("queries %v; want one SRV query over UDP (the glue made address queries needless)", q)
	}
}

func TestResolveWithoutGlue(t *testing.T) {
	ts := newTestDNS(t)
	ts.addGateway("gw-a", 0, 10, 7443, "192.0.2.1")
	ts.addGateway("gw-b", 0, 10, 7444, "2001:db8::2")
	ts.addGateway("gw-c", 0, 10, 7445) // no address in DNS
	ts.set(func(ts *testDNS) { ts.glue = false })
	gws, _, err := Resolve(context.Background(), zone, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(gws)
	if want := []string{"192.0.2.1:7443", "[2001:db8::2]:7444", "gw-c.prod.tunnel.test:7445"}; !slices.Equal(gws, want) {
		t.Errorf("gateways %v; want %v", gws, want)
	}
	q := strings.Join(ts.queryLog(), "\n")
	for _, want := range []string{"udp A gw-a." + zone, "udp AAAA gw-b." + zone} {
		if !strings.Contains(q, want) {
			t.Errorf("queries\n%s\nlack %q", q, want)
		}
	}
}

func TestResolveTruncatedRetriesOverTCP(t *testing.T) {
	ts := newTestDNS(t)
	for i := range 80 {
		ts.addGateway(fmt.Sprintf("gateway-with-a-long-name-%02d", i), 0, 10, uint16(7000+i), fmt.Sprintf("198.51.100.%d", i+1))
	}
	gws, _, err := Resolve(context.Background(), zone, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(gws) != 80 {
		t.Fatalf("%d gateways; want 80", len(gws))
	}
	if q := ts.queryLog(); !slices.Equal(q, []string{"udp SRV _tunnel._udp." + zone, "tcp SRV _tunnel._udp." + zone}) {
		t.Errorf("queries %v; want one over UDP (truncated), then one over TCP", q)
	}
}

func TestOrderRFC2782(t *testing.T) {
	r := &Resolver{Rand: rand.New(rand.NewPCG(1, 2))}
	in := []Target{
		{Name: "p10.", Priority: 10, Weight: 5},
		{Name: "heavy.", Priority: 0, Weight: 30},
		{Name: "light.", Priority: 0, Weight: 10},
		{Name: "zero.", Priority: 0, Weight: 0},
		{Name: "p5.", Priority: 5, Weight: 0},
	}
	firsts := map[string]int{}
	for range 4000 {
		out := r.order(slices.Clone(in))
		var names []string
		for _, o := range out {
			names = append(names, o.Name)
		}
		if len(names) != 5 || names[3] != "p5." || names[4] != "p10." {
			t.Fatalf("order %v; want the priority-0 targets first, then p5, then p10", names)
		}
		firsts[names[0]]++
	}
	// Weights 30:10:0 within priority 0: heavy first about 3/4 of the
	// time, light about 1/4, zero almost never (seeded: deterministic).
	if firsts["heavy."] < 2700 || firsts["heavy."] > 3300 || firsts["light."] < 700 || firsts["zero."] > 200 {
		t.Errorf("first places %v over 4000 orderings; want about 3000 heavy, 1000 light, few zero", firsts)
	}
}

func TestResolveErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("no SRV records", func(t *testing.T) {
		ts := newTestDNS(t)
		_, _, err := Resolve(ctx, zone, ts.addr)
		if !errors.Is(err, ErrNoGateways) || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("NXDOMAIN: %v; want ErrNoGateways saying the name does not exist", err)
		}
	})
	t.Run("only the no-service target", func(t *testing.T) {
		ts := newTestDNS(t)
		ts.set(func(ts *testDNS) {
			ts.srv = []*dns.SRV{{Hdr: dns.RR_Header{Name: "_tunnel._udp." + zone, Rrtype: dns.TypeSRV, Class: dns.ClassINET}, Target: "."}}
		})
		if _, _, err := Resolve(ctx, zone, ts.addr); !errors.Is(err, ErrNoGateways) {
			t.Fatalf("target '.': %v; want ErrNoGateways", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		ts := newTestDNS(t)
		ts.set(func(ts *testDNS) { ts.rcode = dns.RcodeRefused })
		if _, _, err := Resolve(ctx, zone, ts.addr); err == nil || !strings.Contains(err.Error(), "refused the query") {
			t.Fatalf("REFUSED: %v; want an error saying the server refused", err)
		}
	})
	t.Run("SERVFAIL", func(t *testing.T) {
		ts := newTestDNS(t)
		ts.set(func(ts *testDNS) { ts.rcode = dns.RcodeServerFailure })
		if _, _, err := Resolve(ctx, zone, ts.addr); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
			t.Fatalf("SERVFAIL: %v; want an error naming SERVFAIL", err)
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		ts := newTestDNS(t)
		_, port, _ := net.SplitHostPort(ts.addr)
		_, _, err := (&Resolver{Server: "127.0.0.3:" + port, Timeout: 2 * time.Second}).Resolve(ctx, zone)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.3:"+port) {
			t.Fatalf("dead server: %v; want an error naming it", err)
		}
	})
	t.Run("bad server", func(t *testing.T) {
		if _, _, err := Resolve(ctx, zone, "fe80::1::2:x"); err == nil || !strings.Contains(err.Error(), "--dns-server") {
			t.Fatalf("bad server: %v; want an error naming --dns-server", err)
		}
	})
	t.Run("no resolv.conf", func(t *testing.T) {
		r := &Resolver{ResolvConf: filepath.Join(t.TempDir(), "missing")}
		if _, _, err := r.Resolve(ctx, zone); err == nil || !strings.Contains(err.Error(), "--dns-server") {
			t.Fatalf("missing resolv.conf: %v; want an error naming --dns-server", err)
		}
	})
}

func TestResolveSystemServersInOrder(t *testing.T) {
	ts := newTestDNS(t)
	ts.addGateway("gw-a", 0, 10, 7443, "192.0.2.1")
	_, port, _ := net.SplitHostPort(ts.addr)
	// The first server does not answer (nothing listens there); the
	// second one does.
	r := &Resolver{Config: &dns.ClientConfig{Servers: []string{"127.0.0.3", "127.0.0.1"}, Port: port}, Timeout: 2 * time.Second}
	gws, _, err := r.Resolve(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gws, []string{"192.0.2.1:7443"}) {
		t.Fatalf("gateways %v", gws)
	}
}

// fakeAfter hands the watcher's timers to the test.
type fakeAfter struct {
	asked chan time.Duration
	fire  chan time.Time
}

func newFakeAfter() *fakeAfter {
	return &fakeAfter{asked: make(chan time.Duration, 100), fire: make(chan time.Time)}
}

func (f *fakeAfter) After(d time.Duration) <-chan time.Time {
	f.asked <- d
	return f.fire
}

// next waits for the watcher to set its next timer and returns its
// duration.
func (f *fakeAfter) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.asked:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher set no timer")
		return 0
	}
}

// tick fires the timer and waits for the next one (the resolution done).
func (f *fakeAfter) tick(t *testing.T) time.Duration {
	t.Helper()
	f.fire <- time.Now()
	return f.next(t)
}

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

func TestWatcherFollowsChangesAndOutages(t *testing.T) {
	ts := newTestDNS(t)
	ts.addGateway("gw-a", 0, 10, 7443, "192.0.2.1")
	ts.addGateway("gw-b", 0, 10, 7443, "192.0.2.2")
	fa := newFakeAfter()
	logs := &syncBuf{}
	w, err := Watch(context.Background(), WatchConfig{Zone: zone, Resolver: &Resolver{Server: ts.addr},
		After: fa.After, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sorted := func(l []string) []string { l = slices.Clone(l); slices.Sort(l); return l }
	if got := sorted(w.Gateways()); !slices.Equal(got, []string{"192.0.2.1:7443", "192.0.2.2:7443"}) {
		t.Fatalf("first list %v", got)
	}
	if d := fa.next(t); d != 30*time.Second {
		t.Errorf("first wait %v; want the records' TTL, 30s", d)
	}

	// Same records: no change reported.
	fa.tick(t)
	select {
	case l := <-w.Changes():
		t.Fatalf("change %v reported with the same records", l)
	default:
	}

	// A gateway leaves.
	ts.set(func(ts *testDNS) { ts.srv = ts.srv[:1] })
	fa.tick(t)
	select {
	case l := <-w.Changes():
		if !slices.Equal(l, []string{"192.0.2.1:7443"}) {
			t.Fatalf("change %v; want only gw-a", l)
		}
	default:
		t.Fatal("no change reported after a gateway left")
	}

	// DNS fails: the list stays, one warning, backoff from the minimum.
	ts.set(func(ts *testDNS) { ts.rcode = dns.RcodeServerFailure })
	if d := fa.tick(t); d != DefaultMinInterval {
		t.Errorf("wait after a failure %v; want %v", d, DefaultMinInterval)
	}
	if d := fa.tick(t); d != 2*DefaultMinInterval {
		t.Errorf("wait after a second failure %v; want %v", d, 2*DefaultMinInterval)
	}
	if got := w.Gateways(); !slices.Equal(got, []string{"192.0.2.1:7443"}) {
		t.Fatalf("during the outage the list is %v; want the last known one", got)
	}
	if n := strings.Count(logs.String(), "keeping the last known ones"); n != 1 {
		t.Errorf("the outage was logged %d times; want once:\n%s", n, logs)
	}
	// No records at all is a failure too: the last list stays.
	ts.set(func(ts *testDNS) { ts.rcode = 0; ts.srv = nil })
	fa.tick(t)
	if got := w.Gateways(); len(got) != 1 {
		t.Fatalf("with no SRV records the list is %v; want the last known one", got)
	}

	// DNS is back, with a new gateway and a long TTL (clamped).
	ts.addGateway("gw-c", 0, 10, 7445, "192.0.2.3")
	ts.set(func(ts *testDNS) { ts.ttl = 86400 })
	if d := fa.tick(t); d != DefaultMaxInterval {
		t.Errorf("wait with a TTL of a day %v; want %v", d, DefaultMaxInterval)
	}
	if l := <-w.Changes(); !slices.Equal(l, []string{"192.0.2.3:7445"}) {
		t.Fatalf("change %v; want gw-c", l)
	}
	if !strings.Contains(logs.String(), "resolve in DNS again") {
		t.Errorf("recovery not logged:\n%s", logs)
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWatchStart(t *testing.T) {
	ts := newTestDNS(t)
	ts.set(func(ts *testDNS) { ts.rcode = dns.RcodeServerFailure })
	fa := newFakeAfter()
	cfg := WatchConfig{Zone: zone, Resolver: &Resolver{Server: ts.addr}, After: fa.After, Log: slog.New(slog.DiscardHandler)}
	if w, err := Watch(context.Background(), cfg); err == nil {
		w.Close()
		t.Fatal("Watch succeeded with DNS down and no initial list")
	}
	cfg.Initial = []string{"192.0.2.9:8443"}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := Watch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Gateways(); !slices.Equal(got, cfg.Initial) {
		t.Fatalf("list %v; want the initial one", got)
	}
	if d := fa.next(t); d != DefaultMinInterval {
		t.Errorf("first wait with DNS down %v; want %v", d, DefaultMinInterval)
	}
	// The watcher ends with its context.
	cancel()
	done := make(chan struct{})
	go func() { w.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher did not end with its context")
	}
}

func TestWatcherTTLBelowMinimum(t *testing.T) {
	ts := newTestDNS(t)
	ts.addGateway("gw-a", 0, 10, 7443, "192.0.2.1")
	ts.set(func(ts *testDNS) { ts.ttl = 0 })
	fa := newFakeAfter()
	w, err := Watch(context.Background(), WatchConfig{Zone: zone, Resolver: &Resolver{Server: ts.addr}, After: fa.After,
		MinInterval: 7 * time.Second, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if d := fa.next(t); d != 7*time.Second {
		t.Errorf("wait with TTL 0: %v; want the minimum, 7s", d)
	}
}
