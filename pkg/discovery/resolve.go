package discovery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Prefix marks a gateway given as a DNS zone: "srv:ZONE".
const Prefix = "srv:"

// Service is the SRV name below the zone that lists the gateways.
const Service = "_tunnel._udp"

// DefaultResolvConf is where the system's resolvers are read from.
const DefaultResolvConf = "/etc/resolv.conf"

// DefaultTimeout bounds one DNS exchange.
const DefaultTimeout = 5 * time.Second

// ErrNoGateways is returned (wrapped) when the zone publishes no gateway.
var ErrNoGateways = errors.New("no gateways published")

// ParseGateway reports whether gateway is "srv:ZONE" and returns the zone,
// fully qualified. ok false means gateway is a plain HOST:PORT list; err
// says what is wrong with a "srv:" one.
func ParseGateway(gateway string) (zone string, ok bool, err error) {
	rest, found := strings.CutPrefix(strings.TrimSpace(gateway), Prefix)
	if !found {
		return "", false, nil
	}
	zone = strings.ToLower(strings.TrimSpace(rest))
	if _, valid := dns.IsDomainName(zone); !valid || zone == "" || zone == "." || strings.ContainsAny(zone, ":/, ") {
		return "", true, fmt.Errorf("%q: want srv:ZONE with ZONE the cluster's DNS zone, for example srv:prod.tunnel.example.com", gateway)
	}
	return dns.Fqdn(zone), true, nil
}

// Target is one SRV record of the zone, with the addresses of its target.
type Target struct {
	Name     string // the target, fully qualified
	Port     uint16
	Priority uint16
	Weight   uint16
	Addrs    []netip.Addr // A records first, then AAAA
}

// HostPort is the address to dial: the first address, or the target's
// name when DNS gave none.
func (t Target) HostPort() string {
	host := strings.TrimSuffix(t.Name, ".")
	if len(t.Addrs) > 0 {
		host = t.Addrs[0].String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(t.Port)))
}

// Resolver asks DNS for the gateways. The zero value uses the system's
// resolvers.
type Resolver struct {
	// Server is the DNS server to ask (HOST:PORT, HOST meaning port 53);
	// "" means the servers of Config.
	Server string
	// Config lists the servers when Server is ""; nil means read
	// ResolvConf.
	Config *dns.ClientConfig
	// ResolvConf is the file Config is read from ("" means
	// DefaultResolvConf).
	ResolvConf string
	// Timeout bounds one exchange (DefaultTimeout).
	Timeout time.Duration
	// Rand orders SRV records of equal priority (RFC 2782); nil means a
	// random source.
	Rand *rand.Rand
}

// Resolve returns the gateways of zone (HOST:PORT each, RFC 2782 order)
// and the TTL of the answer, asking server ("" means the system's
// resolvers).
func Resolve(ctx context.Context, zone, server string) ([]string, time.Duration, error) {
	return (&Resolver{Server: server}).Resolve(ctx, zone)
}

// Resolve returns the gateways of zone as HOST:PORT, in RFC 2782 order,
// and the lowest TTL of the records used.
func (r *Resolver) Resolve(ctx context.Context, zone string) ([]string, time.Duration, error) {
	targets, ttl, err := r.Lookup(ctx, zone)
	if err != nil {
		return nil, 0, err
	}
	out := make([]string, 0, len(targets))
	for _, t := range targets {
		if hp := t.HostPort(); !slices.Contains(out, hp) {
			out = append(out, hp)
		}
	}
	return out, ttl, nil
}

// Lookup returns the SRV targets of zone with their addresses, in RFC
// 2782 order, and the lowest TTL of the records used.
func (r *Resolver) Lookup(ctx context.Context, zone string) ([]Target, time.Duration, error) {
	zone = dns.Fqdn(strings.ToLower(strings.TrimSpace(zone)))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "." {
		return nil, 0, fmt.Errorf("discovery: %q is not a DNS zone", zone)
	}
	servers, err := r.servers()
	if err != nil {
		return nil, 0, err
	}
	name := Service + "." + zone
	reply, server, err := r.ask(ctx, servers, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	if reply.Rcode == dns.RcodeNameError {
		return nil, 0, fmt.Errorf("discovery: %s does not exist at %s: %w in the zone %s (check --gateway srv:ZONE and that the gateways serve it)",
			name, server, ErrNoGateways, strings.TrimSuffix(zone, "."))
	}
	ttl := uint32(0)
	first := true
	minTTL := func(t uint32) {
		if first || t < ttl {
			ttl, first = t, false
		}
	}
	var targets []Target
	for _, rr := range reply.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || srv.Target == "." {
			continue
		}
		minTTL(srv.Hdr.Ttl)
		targets = append(targets, Target{Name: strings.ToLower(srv.Target), Port: srv.Port, Priority: srv.Priority, Weight: srv.Weight})
	}
	if len(targets) == 0 {
		return nil, 0, fmt.Errorf("discovery: %s at %s has no SRV record: %w in the zone %s",
			name, server, ErrNoGateways, strings.TrimSuffix(zone, "."))
	}
	targets = r.order(targets)

	// Addresses: from the additional section, else asked for.
	glue := map[string][]dns.RR{}
	for _, rr := range reply.Extra {
		switch rr.(type) {
		case *dns.A, *dns.AAAA:
			n := strings.ToLower(rr.Header().Name)
			glue[n] = append(glue[n], rr)
		}
	}
	for i := range targets {
		t := &targets[i]
		rrs := glue[t.Name]
		if len(rrs) == 0 {
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
				a, _, err := r.ask(ctx, []string{server}, t.Name, qt)
				if err != nil {
					continue // the dialer may still resolve the name
				}
				rrs = append(rrs, a.Answer...)
			}
		}
		t.Addrs = addrs(rrs, t.Name, minTTL)
	}
	return targets, time.Duration(ttl) * time.Second, nil
}

// addrs returns the A then AAAA addresses of name in rrs, noting their
// TTLs.
func addrs(rrs []dns.RR, name string, minTTL func(uint32)) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, rr := range rrs {
		if !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
				v4 = append(v4, a)
				minTTL(rr.Hdr.Ttl)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA.To16()); ok {
				v6 = append(v6, a)
				minTTL(rr.Hdr.Ttl)
			}
		}
	}
	return append(v4, v6...)
}

// order sorts targets as RFC 2782 says: by priority, then within one
// priority a weighted random order (weight 0 rarely first).
func (r *Resolver) order(ts []Target) []Target {
	intN := rand.IntN
	if r.Rand != nil {
		intN = r.Rand.IntN
	}
	slices.SortStableFunc(ts, func(a, b Target) int { return int(a.Priority) - int(b.Priority) })
	out := make([]Target, 0, len(ts))
	for i := 0; i < len(ts); {
		j := i
		for j < len(ts) && ts[j].Priority == ts[i].Priority {
			j++
		}
		group := slices.Clone(ts[i:j])
		// Zero weights first, as the RFC's selection algorithm places them.
		slices.SortStableFunc(group, func(a, b Target) int {
			return min(int(a.Weight), 1) - min(int(b.Weight), 1)
		})
		for len(group) > 0 {
			sum := 0
			for _, t := range group {
				sum += int(t.Weight)
			}
			pick := intN(sum + 1)
			k, run := 0, 0
			for k = range group {
				run += int(group[k].Weight)
				if run >= pick {
					break
				}
			}
			out = append(out, group[k])
			group = slices.Delete(group, k, k+1)
		}
		i = j
	}
	return out
}

// servers returns the servers to ask, each HOST:PORT.
func (r *Resolver) servers() ([]string, error) {
	if r.Server != "" {
		if _, _, err := net.SplitHostPort(r.Server); err == nil {
			return []string{r.Server}, nil
		}
		host := strings.Trim(r.Server, "[]")
		if _, err := netip.ParseAddr(host); err == nil || !strings.Contains(host, ":") {
			return []string{net.JoinHostPort(host, "53")}, nil // HOST alone: port 53
		}
		return nil, fmt.Errorf("discovery: DNS server %q: want HOST:PORT (--dns-server)", r.Server)
	}
	conf := r.Config
	if conf == nil {
		path := r.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		c, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("discovery: read the system's DNS servers from %s: %w (give one with --dns-server)", path, err)
		}
		conf = c
	}
	port := conf.Port
	if port == "" {
		port = "53"
	}
	var out []string
	for _, s := range conf.Servers {
		out = append(out, net.JoinHostPort(s, port))
	}
	if len(out) == 0 {
		return nil, errors.New("discovery: the system has no DNS server configured: give one with --dns-server")
	}
	return out, nil
}

// ask sends one query to each server in turn until one answers with
// NOERROR or NXDOMAIN; it returns that reply and the server.
func (r *Resolver) ask(ctx context.Context, servers []string, name string, qtype uint16) (*dns.Msg, string, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var errs []error
	for _, server := range servers {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.RecursionDesired = true // for a system resolver; an authoritative server ignores it
		m.SetEdns0(1232, false)
		reply, err := exchange(ctx, m, server, timeout)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		switch reply.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return reply, server, nil
		case dns.RcodeRefused:
			errs = append(errs, fmt.Errorf("%s refused the query for %s (it does not serve that zone)", server, name))
		default:
			errs = append(errs, fmt.Errorf("%s answered %s for %s", server, dns.RcodeToString[reply.Rcode], name))
		}
	}
	return nil, "", fmt.Errorf("discovery: ask DNS for %s %s: %w", dns.TypeToString[qtype], name, errors.Join(errs...))
}

// exchange sends m over UDP and again over TCP when the reply is
// truncated.
func exchange(ctx context.Context, m *dns.Msg, server string, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	reply, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && !reply.Truncated {
		return check(m, reply)
	}
	if err != nil && !errors.Is(err, dns.ErrBuf) {
		var ne net.Error
		if !errors.As(err, &ne) {
			return nil, err
		}
		// A timeout or refusal over UDP (UDP blocked?): TCP may still work.
	}
	c = &dns.Client{Net: "tcp", Timeout: timeout}
	reply, _, err = c.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, err
	}
	return check(m, reply)
}

// check makes sure reply answers m's question.
func check(m, reply *dns.Msg) (*dns.Msg, error) {
	if len(reply.Question) != 1 || !strings.EqualFold(reply.Question[0].Name, m.Question[0].Name) ||
		reply.Question[0].Qtype != m.Question[0].Qtype {
		return nil, errors.New("the reply does not answer the question asked")
	}
	return reply, nil
}
