package dnsserver

import (
	"context"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// Gateway is one live gateway as DNS publishes it.
type Gateway struct {
	// ID names it: its records live at gw-ID.ZONE (see GatewayLabel).
	ID string
	// Addrs are its addresses (A and AAAA); unspecified and invalid ones
	// are ignored.
	Addrs []netip.Addr
	// Host is the host name it advertises when it has no address: with no
	// usable Addrs, its SRV records point at Host instead of gw-ID.ZONE.
	Host string
	// QUICPort is the port of _tunnel._udp, APIPort that of _tunnel._tcp;
	// 0 leaves the record out.
	QUICPort, APIPort uint16
}

// Node is a name an operator publishes in the zone: NAME.ZONE A/AAAA.
type Node struct {
	// Name is relative to the zone ("web-1" or "web-1.eu"): letters,
	// digits and '-' in each label, not starting with "gw-" (the
	// gateways' names) nor "_".
	Name  string
	Addrs []netip.Addr
}

// RecordSource tells the server what the zone holds. The gateway
// implements it (see StoreSource). Its methods are called at most once per
// Server.CacheFor, from one goroutine at a time, with a context bounded by
// Server.SourceTimeout.
type RecordSource interface {
	// Gateways returns the live gateways.
	Gateways(ctx context.Context) ([]Gateway, error)
	// Nodes returns the published node names (nil for none).
	Nodes(ctx context.Context) ([]Node, error)
}

// Service names of the SRV records, below the zone.
const (
	ServiceUDP = "_tunnel._udp"
	ServiceTCP = "_tunnel._tcp"
)

// srvWeight is every SRV record's weight: equal weights, so resolvers
// spread clients evenly (RFC 2782).
const srvWeight = 10

// GatewayLabel returns the DNS label of the gateway id ("gw-" + the id
// lower-cased, with every byte outside a-z, 0-9, '-' replaced by '-', at
// most 63 bytes), or "" for an empty id.
func GatewayLabel(id string) string {
	if id == "" {
		return ""
	}
	b := []byte("gw-" + strings.ToLower(id))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

// validNodeName reports whether a node name (relative, lower case) can be
// published: labels of letters, digits and '-', not starting or ending
// with '-', none empty, the first not reserved.
func validNodeName(name string) bool {
	if name == "" || len(name) > 200 || strings.HasPrefix(name, "gw-") {
		return false
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// zoneData is one snapshot of the zone: immutable once built.
type zoneData struct {
	apex string // canonical: lower case, fully qualified
	ttl  uint32
	// names maps every existing name (lower case, fully qualified) to its
	// records by type; empty non-terminals map to an empty set.
	names map[string]map[uint16][]dns.RR
	soa   *dns.SOA
	// digest identifies the content (for the SOA serial).
	digest uint64
}

// zoneOptions shape a snapshot.
type zoneOptions struct {
	apex        string
	ttl         uint32
	nameServers []string // fully qualified; empty means the live gateways
}

// buildZone makes the snapshot for gws and nodes. It skips what it cannot
// publish and returns the reasons (for the log).
func buildZone(o zoneOptions, gws []Gateway, nodes []Node) (z *zoneData, skipped []string) {
	z = &zoneData{apex: o.apex, ttl: o.ttl, names: map[string]map[uint16][]dns.RR{}}
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: o.ttl}
	}
	add := func(rr dns.RR) {
		name := rr.Header().Name
		set := z.names[name]
		if set == nil {
			set = map[uint16][]dns.RR{}
			z.names[name] = set
		}
		set[rr.Header().Rrtype] = append(set[rr.Header().Rrtype], rr)
	}
	addAddrs := func(name string, addrs []netip.Addr) int {
		n := 0
		for _, a := range usable(addrs) {
			if a.Is4() {
				add(&dns.A{Hdr: hdr(name, dns.TypeA), A: a.AsSlice()})
			} else {
				add(&dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
			}
			n++
		}
		return n
	}

	gws = slices.Clone(gws)
	slices.SortFunc(gws, func(a, b Gateway) int {
		if c := strings.Compare(GatewayLabel(a.ID), GatewayLabel(b.ID)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID) // a clash of names: the first id wins
	})
	var gwNames []string
	for _, g := range gws {
		label := GatewayLabel(g.ID)
		if label == "" {
			skipped = append(skipped, "a gateway with an empty id")
			continue
		}
		owner := label + "." + o.apex
		target := owner
		if _, dup := z.names[owner]; dup {
			skipped = append(skipped, "gateway "+g.ID+": its name "+owner+" is taken by another gateway id")
			continue
		}
		if addAddrs(owner, g.Addrs) > 0 {
			gwNames = append(gwNames, owner)
		} else if h := strings.ToLower(strings.TrimSuffix(g.Host, ".")); h != "" && isDomainName(h) {
			target = dns.Fqdn(h)
		} else {
			skipped = append(skipped, "gateway "+g.ID+" advertises no usable address (a wildcard?): give it --advertise-addr")
			continue
		}
		if g.QUICPort != 0 {
			add(&dns.SRV{Hdr: hdr(ServiceUDP+"."+o.apex, dns.TypeSRV), Weight: srvWeight, Port: g.QUICPort, Target: target})
		}
		if g.APIPort != 0 {
			add(&dns.SRV{Hdr: hdr(ServiceTCP+"."+o.apex, dns.TypeSRV), Weight: srvWeight, Port: g.APIPort, Target: target})
		}
	}

	for _, n := range nodes {
		name := strings.ToLower(strings.TrimSuffix(n.Name, "."))
		if !validNodeName(name) {
			skipped = append(skipped, "node "+n.Name+": not a publishable name (labels of a-z, 0-9, '-', not gw-*)")
			continue
		}
		owner := name + "." + o.apex
		if _, dup := z.names[owner]; dup {
			skipped = append(skipped, "node "+n.Name+": published twice")
			continue
		}
		if addAddrs(owner, n.Addrs) == 0 {
			skipped = append(skipped, "node "+n.Name+": no usable address")
		}
	}

	ns := o.nameServers
	if len(ns) == 0 {
		ns = gwNames
	}
	for _, n := range ns {
		add(&dns.NS{Hdr: hdr(o.apex, dns.TypeNS), Ns: n})
	}
	mname := o.apex
	if len(ns) > 0 {
		mname = ns[0]
	}
	z.soa = &dns.SOA{Hdr: hdr(o.apex, dns.TypeSOA), Ns: mname, Mbox: "hostmaster." + o.apex,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: o.ttl}
	add(z.soa)

	// Every ancestor of a name, up to the apex, exists (an empty
	// non-terminal when it has no records of its own): NODATA there, not
	// NXDOMAIN (RFC 8020).
	for name := range z.names {
		for p := parent(name); p != "" && dns.IsSubDomain(o.apex, p) && p != o.apex; p = parent(p) {
			if _, ok := z.names[p]; !ok {
				z.names[p] = map[uint16][]dns.RR{}
			}
		}
	}

	h := fnv.New64a()
	keys := make([]string, 0, len(z.names))
	for name, set := range z.names {
		for t, rrs := range set {
			if t == dns.TypeSOA {
				continue
			}
			for _, rr := range rrs {
				keys = append(keys, rr.String())
			}
		}
		keys = append(keys, name)
	}
	slices.Sort(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
	}
	z.digest = h.Sum64()
	return z, skipped
}

// withSerial returns z with its SOA serial set (z is not shared yet).
func (z *zoneData) withSerial(serial uint32) *zoneData {
	z.soa.Serial = serial
	return z
}

// usable keeps the valid, specified addresses, IPv4-mapped ones unmapped.
func usable(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if a.IsValid() && !a.IsUnspecified() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// parent returns the name above name ("b.c." for "a.b.c."), "" at the root.
func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return ""
	}
	return name[i:]
}

// lookup is the zone's answer for (name, qtype): name is lower case and
// inside the zone.
type lookup struct {
	answer []dns.RR
	extra  []dns.RR
	rcode  int
	// negative: NXDOMAIN or NODATA, the SOA goes in the authority section.
	negative bool
}

func (z *zoneData) lookup(name string, qtype uint16) lookup {
	set, ok := z.names[name]
	if !ok {
		return lookup{rcode: dns.RcodeNameError, negative: true}
	}
	rrs := set[qtype]
	if len(rrs) == 0 {
		return lookup{rcode: dns.RcodeSuccess, negative: true}
	}
	l := lookup{rcode: dns.RcodeSuccess, answer: rrs}
	// Additional section: the addresses of SRV and NS targets in the zone.
	seen := map[string]bool{}
	for _, rr := range rrs {
		var target string
		switch rr := rr.(type) {
		case *dns.SRV:
			target = rr.Target
		case *dns.NS:
			target = rr.Ns
		default:
			continue
		}
		if seen[target] {
			continue
		}
		seen[target] = true
		if ts := z.names[target]; ts != nil {
			l.extra = append(l.extra, ts[dns.TypeA]...)
			l.extra = append(l.extra, ts[dns.TypeAAAA]...)
		}
	}
	return l
}

func isDomainName(s string) bool {
	_, ok := dns.IsDomainName(s)
	return ok
}
