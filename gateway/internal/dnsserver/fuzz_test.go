package dnsserver

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzDNSHandler feeds arbitrary bytes to the query handler, as read from
// UDP or TCP: it must never panic, and a reply, if any, must parse, answer
// the query's id, stay within the UDP size and never offer recursion.
func FuzzDNSHandler(f *testing.F) {
	seed := func(name string, qtype uint16, edns bool) []byte {
		m := query(name, qtype)
		if edns {
			m.SetEdns0(4096, true)
		}
		p, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return p
	}
	for _, s := range [][]byte{
		seed("_tunnel._udp."+zone, dns.TypeSRV, false),
		seed("_tunnel._tcp."+zone, dns.TypeSRV, true),
		seed("gw-gw1."+zone, dns.TypeA, false),
		seed("gw-gw2."+zone, dns.TypeAAAA, true),
		seed("nope."+zone, dns.TypeA, false),
		seed(zone, dns.TypeSOA, false),
		seed(zone, dns.TypeANY, false),
		seed("example.com.", dns.TypeA, false),
		seed("_udp."+zone, dns.TypeTXT, true),
		{},
		make([]byte, 12),
		{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0}, // a response
		{0, 1, 0x28, 0, 0, 1, 0, 0, 0, 0, 0, 0}, // UPDATE
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	src := &fakeSource{gws: append(twoGateways(), manyGateways(30)...),
		nodes: []Node{{Name: "web-1", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}}
	s := &Server{Zone: zone, Source: src, Clock: newClock().Now, Log: slog.New(slog.DiscardHandler)}
	if err := s.init(); err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte, udp bool) {
		out, _ := s.answer(ctx, data, udp)
		if out == nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			t.Fatalf("reply does not parse: %v\nquery %x\nreply %x", err, data, out)
		}
		if !m.Response || m.RecursionAvailable {
			t.Fatalf("reply QR=%v RA=%v; want QR and no RA", m.Response, m.RecursionAvailable)
		}
		if id := binary.BigEndian.Uint16(data[0:2]); m.Id != id {
			t.Fatalf("reply id %d; want the query's %d", m.Id, id)
		}
		if udp && len(out) > s.maxUDPSize() {
			t.Fatalf("UDP reply of %d bytes; want at most %d", len(out), s.maxUDPSize())
		}
		if len(out) > dns.MaxMsgSize {
			t.Fatalf("reply of %d bytes does not fit a TCP frame", len(out))
		}
	})
}
