package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/discovery"
)

// checkDNS looks up the SRV records the gateways publish for the zone
// (_tunnel._udp.ZONE) and checks that one of them leads to this gateway.
func (r *runner) checkDNS(ctx context.Context) []Finding {
	const check = "dns"
	if r.cfg.DNSZone == "" {
		return []Finding{local(info(check, "dns.skipped", "DNS was not checked (pass --dns-zone ZONE when the gateways publish SRV records)"))}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	zone := strings.TrimPrefix(r.cfg.DNSZone, discovery.Prefix)
	name := discovery.Service + "." + strings.TrimSuffix(zone, ".")
	res := &discovery.Resolver{Server: r.cfg.DNSServer, Timeout: r.cfg.Timeout}
	targets, _, err := res.Lookup(ctx, zone)
	if err != nil {
		return []Finding{fail(check, "dns.srv", C, fmt.Sprintf("the SRV records %s do not resolve: %v", name, err),
			"check the gateway's --dns-addr/--dns-zone, the delegation of the zone to it, and --dns-server")}
	}
	want := map[netip.AddrPort]bool{}
	for _, hp := range []string{r.cfg.API, r.cfg.QUIC} {
		for _, ap := range r.addrPorts(ctx, hp) {
			want[ap] = true
		}
	}
	var listed []string
	for _, t := range targets {
		listed = append(listed, t.HostPort())
		for _, a := range t.Addrs {
			if want[netip.AddrPortFrom(a.Unmap(), t.Port)] {
				return []Finding{ok(check, "dns.srv", fmt.Sprintf("the SRV records %s lead to this gateway (%s)", name, t.HostPort()))}
			}
		}
	}
	return []Finding{fail(check, "dns.srv", C, fmt.Sprintf("the SRV records %s list %s, not this gateway (%s)", name, strings.Join(listed, ", "), r.cfg.API),
		"check the gateway heartbeats (tunnel admin gateways) and its advertised address (--advertise-addr or --name)")}
}

// addrPorts resolves HOST:PORT to addresses.
func (r *runner) addrPorts(ctx context.Context, hostport string) []netip.AddrPort {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(a.Unmap(), uint16(p))}
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(p)))
	}
	return out
}
