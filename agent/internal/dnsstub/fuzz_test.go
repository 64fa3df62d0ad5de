package dnsstub

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// recorder is a dns.ResponseWriter that keeps what the handler writes.
type recorder struct {
	remote net.Addr
	msgs   []*dns.Msg
	closed bool
}

func (r *recorder) LocalAddr() net.Addr         { return r.remote }
func (r *recorder) RemoteAddr() net.Addr        { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msgs = append(r.msgs, m); return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { r.closed = true; return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

// fuzzServer is a Server that is not listening: its handler alone.
func fuzzServer(tb testing.TB) *Server {
	cfg, _, zone, err := Config{Listen: "127.0.0.1:0", Cluster: "prod", Names: testNames,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RatePerSecond: 1e12, Burst: 1 << 30}.normalize()
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{cfg: cfg, zone: zone, log: cfg.Log, limit: newLimiter(cfg.RatePerSecond, cfg.Burst, cfg.Now), forward: make(chan struct{}, 1)}
	s.names.Store(&cfg.Names)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	tb.Cleanup(s.cancel)
	return s
}

// FuzzStubHandler: arbitrary bytes as a query, through what miekg/dns does
// before the handler (accept, unpack) and the handler itself: it never
// panics, and any answer packs, parses back, keeps the query's ID and fits
// the transport.
func FuzzStubHandler(f *testing.F) {
	for _, q := range []*dns.Msg{
		new(dns.Msg).SetQuestion("orders-db.prod.tunnel.", dns.TypeA),
		new(dns.Msg).SetQuestion("CACHE6.prod.tunnel.", dns.TypeAAAA),
		new(dns.Msg).SetQuestion("nosuch.prod.tunnel.", dns.TypeANY),
		new(dns.Msg).SetQuestion("prod.tunnel.", dns.TypeSOA),
		new(dns.Msg).SetQuestion("example.com.", dns.TypeMX),
		new(dns.Msg).SetQuestion("orders-db.prod.tunnel.", dns.TypeA).SetEdns0(4096, true),
	} {
		b, err := q.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 12), true)
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		if len(data) < 12 {
			return // miekg/dns drops these before any handler
		}
		var h dns.Header
		h.Id = uint16(data[0])<<8 | uint16(data[1])
		h.Bits = uint16(data[2])<<8 | uint16(data[3])
		h.Qdcount = uint16(data[4])<<8 | uint16(data[5])
		h.Ancount = uint16(data[6])<<8 | uint16(data[7])
		h.Nscount = uint16(data[8])<<8 | uint16(data[9])
		h.Arcount = uint16(data[10])<<8 | uint16(data[11])
		if accept(h) != dns.MsgAccept {
			return
		}
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return // miekg/dns answers FORMERR itself
		}
		var remote net.Addr = net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:5353"))
		if tcp {
			remote = net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:5353"))
		}
		before := panics.Count()
		w := &recorder{remote: remote}
		s.ServeDNS(w, req)
		if panics.Count() != before {
			t.Fatalf("the handler panicked on %x", data)
		}
		if len(w.msgs) != 1 {
			t.Fatalf("%d answers, want 1", len(w.msgs))
		}
		b, err := w.msgs[0].Pack()
		if err != nil {
			t.Fatalf("the answer does not pack: %v\n%v", err, w.msgs[0])
		}
		limit := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			limit = max(limit, min(int(opt.UDPSize()), ednsSize))
		}
		if !tcp && len(b) > limit {
			t.Fatalf("a %d-byte UDP answer, the client takes %d", len(b), limit)
		}
		back := new(dns.Msg)
		if err := back.Unpack(b); err != nil {
			t.Fatalf("the answer does not parse: %v", err)
		}
		if back.Id != req.Id || !back.Response {
			t.Fatalf("answer id %d response %v, query id %d", back.Id, back.Response, req.Id)
		}
	})
}
