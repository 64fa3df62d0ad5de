package dnsserver

import (
	"context"
	"encoding/binary"
	"strings"

	"github.com/miekg/dns"
)

// DNS header bits this file reads from raw bytes, before a message parses.
const (
	headerLen = 12
	flagQR    = 1 << 15
)

// ednsSize is the UDP payload size this server advertises in its OPT
// record when the client sent none: the DNS flag day 2020 value.
const ednsSize = 1232

// answer returns the reply to the query raw (nil: send nothing), received
// over UDP when udp is true, and whether raw was malformed (a TCP
// connection that sent it is closed after the reply). The callers recover
// around it.
func (s *Server) answer(ctx context.Context, raw []byte, udp bool) (out []byte, malformed bool) {
	if len(raw) < headerLen {
		s.stats.malformed.Add(1)
		return nil, true // not even a header: nothing to reply to
	}
	if binary.BigEndian.Uint16(raw[2:4])&flagQR != 0 {
		s.stats.malformed.Add(1)
		return nil, true // a response: never answer one (no loops, no reflection)
	}
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		s.stats.malformed.Add(1)
		return s.pack(headerReply(raw, dns.RcodeFormatError), udp, 0), true
	}
	reply := s.reply(ctx, req)
	s.stats.rcode(reply.Rcode)
	limit := 0
	if udp {
		limit = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), s.maxUDPSize())
		}
	}
	return s.pack(reply, udp, limit), false
}

// headerReply is the reply to a query that does not parse: its id and
// opcode, the rcode, nothing else.
func headerReply(raw []byte, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.Id = binary.BigEndian.Uint16(raw[0:2])
	m.Response = true
	m.Opcode = int(raw[2]>>3) & 0xF
	m.Rcode = rcode
	return m
}

// reply builds the answer to a parsed query.
func (s *Server) reply(ctx context.Context, req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	if len(req.Question) > 0 {
		m.Question = req.Question[:1]
	}

	opt := req.IsEdns0()
	if opt != nil {
		// The reply carries an OPT record of its own (RFC 6891 §6.1.1).
		m.SetEdns0(ednsSize, false)
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers // extended: 12 bits across header and OPT
			m.Question = nil
			return m
		}
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(s.apex, name) {
		m.Rcode = dns.RcodeRefused // not ours: authoritative only, no recursion
		return m
	}
	switch q.Qtype {
	case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB:
		m.Rcode = dns.RcodeRefused
		return m
	}
	z, err := s.cache.get(ctx)
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	m.Authoritative = true
	l := z.lookup(name, q.Qtype)
	m.Rcode = l.rcode
	for _, rr := range l.answer {
		rr = dns.Copy(rr)
		rr.Header().Name = q.Name // the asker's spelling (0x20 randomisation)
		m.Answer = append(m.Answer, rr)
	}
	if l.negative {
		m.Ns = []dns.RR{z.soa}
	}
	// The OPT record, if any, stays last.
	m.Extra = append(append([]dns.RR(nil), l.extra...), m.Extra...)
	return m
}

// pack encodes m; over UDP (limit > 0) an answer that does not fit first
// loses its additional records, then is truncated with TC set.
func (s *Server) pack(m *dns.Msg, udp bool, limit int) []byte {
	m.Compress = true
	if udp && limit > 0 && m.Len() > limit {
		var keep []dns.RR
		for _, rr := range m.Extra {
			if rr.Header().Rrtype == dns.TypeOPT {
				keep = append(keep, rr)
			}
		}
		m.Extra = keep
		if m.Len() > limit {
			m.Truncate(limit)
			m.Truncated = true
			s.stats.truncated.Add(1)
		}
		m.Compress = true
	}
	out, err := m.Pack()
	if err != nil {
		s.log().Warn("DNS: cannot encode a reply; answering SERVFAIL", "err", err)
		f := new(dns.Msg)
		f.Id, f.Response, f.Opcode, f.Rcode = m.Id, true, m.Opcode, dns.RcodeServerFailure
		out, err = f.Pack()
		if err != nil {
			return nil
		}
	}
	return out
}
