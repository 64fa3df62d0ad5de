package dnsstub

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// ednsSize is the UDP payload size the stub advertises and accepts at most
// (the DNS flag day 2020 value, which avoids IP fragmentation).
const ednsSize = 1232

// accept is miekg/dns's first check of a message, before it is parsed:
// responses are ignored (answering them can loop), anything but a QUERY
// is NOTIMP, and a query must hold one question and at most one record
// (EDNS0's OPT) in the other sections.
func accept(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 { // QR: a response
		return dns.MsgIgnore
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 || dh.Ancount != 0 || dh.Nscount != 0 || dh.Arcount > 1 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// ServeDNS answers one query; it is the boundary where a panic stops (the
// query gets no answer, a TCP connection is closed, the stub goes on).
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	defer panics.Recover(s.log, "dns stub query", w.Close)
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if !s.limit.allow(sourceIP(w.RemoteAddr())) {
		s.stats.rateLimited.Add(1)
		if tcp {
			_ = w.Close()
		}
		return // no answer: an answer would be what a flood wants
	}
	m := s.respond(s.ctx, r, tcp)
	if m == nil {
		return
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("cannot send a DNS answer", "client", w.RemoteAddr().String(), "err", err)
	}
}

func sourceIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// respond makes the answer to r. It never returns a message bigger than the
// transport allows: over UDP it is truncated (TC) to the client's size.
func (s *Server) respond(ctx context.Context, r *dns.Msg, tcp bool) *dns.Msg {
	m := s.answer(ctx, r)
	// EDNS0: answer with our own OPT if the client sent one, never echo its
	// options.
	opt := r.IsEdns0()
	m.Extra = dropOPT(m.Extra)
	size := dns.MinMsgSize
	if opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
		size = max(dns.MinMsgSize, min(int(opt.UDPSize()), ednsSize))
		if opt.Version() != 0 {
			m.Answer, m.Ns = nil, nil
			m.Rcode = dns.RcodeBadVers // sets the OPT's extended rcode when packed
		}
	}
	if m.Rcode > 0xF && m.IsEdns0() == nil {
		// An upstream's extended rcode cannot reach a client without EDNS0.
		m = new(dns.Msg).SetRcode(r, dns.RcodeServerFailure)
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	m.Compress = true
	m.Truncate(size)
	if _, err := m.Pack(); err != nil {
		// Only an upstream's odd answer can get here: say SERVFAIL rather
		// than leave the client waiting.
		s.log.Debug("cannot pack a DNS answer; answered SERVFAIL", "err", err)
		m = new(dns.Msg).SetRcode(r, dns.RcodeServerFailure)
		m.Question = nil
	}
	return m
}

func dropOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// answer decides: the cluster's zone, the upstream, or REFUSED.
func (s *Server) answer(ctx context.Context, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery || r.Response {
		m.SetRcodeFormatError(r)
		m.Question = nil
		return m
	}
	m.SetReply(r)
	q := r.Question[0]
	name := lowerASCII(q.Name)
	inZone := name == s.zone || strings.HasSuffix(name, "."+s.zone)
	if !inZone {
		if s.cfg.Upstream != "" {
			return s.forwardQuery(ctx, r)
		}
		s.stats.refused.Add(1)
		m.Rcode = dns.RcodeRefused
		return m
	}
	s.stats.answered.Add(1)
	m.Authoritative = true
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return m
	}
	if name == s.zone {
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = []dns.RR{s.soa(q.Name)}
		} else {
			m.Ns = []dns.RR{s.soa(s.zone)}
		}
		return m
	}
	label := strings.TrimSuffix(name, "."+s.zone)
	addr, ok := (*s.names.Load())[label]
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soa(s.zone)}
		return m
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: TTL}
	}
	switch {
	case addr.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		a := addr.As4()
		m.Answer = []dns.RR{&dns.A{Hdr: hdr(dns.TypeA), A: net.IP(a[:])}}
	case addr.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		a := addr.As16()
		m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IP(a[:])}}
	default:
		m.Ns = []dns.RR{s.soa(s.zone)} // NODATA: the name exists, not this type
	}
	return m
}

// soa is the zone's SOA; its TTL and minimum make negative answers live
// TTL seconds in caches.
func (s *Server) soa(owner string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      "localhost.",
		Mbox:    "hostmaster." + s.zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  TTL,
	}
}

// forwardQuery asks the upstream the client's question and returns its
// answer, or SERVFAIL when it fails, times out or too many queries are
// already in flight.
func (s *Server) forwardQuery(ctx context.Context, r *dns.Msg) *dns.Msg {
	fail := func(reason string, err error) *dns.Msg {
		s.stats.failed.Add(1)
		s.log.Debug("forwarding a DNS query failed; answered SERVFAIL", "reason", reason, "upstream", s.cfg.Upstream, "err", err)
		m := new(dns.Msg).SetRcode(r, dns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m
	}
	select {
	case s.forward <- struct{}{}:
		defer func() { <-s.forward }()
	default:
		return fail("too many forwarded queries in flight", nil)
	}
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = r.RecursionDesired
	q.CheckingDisabled = r.CheckingDisabled
	q.Question = []dns.Question{r.Question[0]}
	do := false
	if opt := r.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	q.SetEdns0(ednsSize, do)

	ctx, cancel := context.WithTimeout(ctx, s.cfg.UpstreamTimeout)
	defer cancel()
	resp, _, err := s.upstreamClient.ExchangeContext(ctx, q, s.cfg.Upstream)
	if err == nil && resp.Truncated {
		tcp := *s.upstreamClient
		tcp.Net = "tcp"
		resp, _, err = tcp.ExchangeContext(ctx, q, s.cfg.Upstream)
	}
	if err != nil {
		return fail("no answer from the upstream", err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, r.Question[0].Name) || resp.Question[0].Qtype != r.Question[0].Qtype {
		return fail("the upstream answered another question", nil)
	}
	s.stats.forwarded.Add(1)
	resp.Id = r.Id
	resp.Question = []dns.Question{r.Question[0]} // the client's letter case
	resp.Response = true
	resp.Opcode = dns.OpcodeQuery
	resp.Authoritative = false
	resp.RecursionDesired = r.RecursionDesired
	return resp
}
