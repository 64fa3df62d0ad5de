// Package discovery finds the cluster's gateways in DNS, for agents and
// clients given `--gateway srv:ZONE` instead of a static list (ISSUE10 §1).
//
// A gateway's DNS server (gateway/internal/dnsserver) publishes one SRV
// record per live gateway at _tunnel._udp.ZONE, whose port is the one
// agents and clients dial (QUIC over UDP, the HTTPS API over TCP on the
// same port). This package asks for those records and follows their
// targets to addresses:
//
//	zone, ok, err := discovery.ParseGateway("srv:prod.tunnel.example.com")
//	gws, ttl, err := discovery.Resolve(ctx, zone, "")      // the system's resolver
//	gws, ttl, err := discovery.Resolve(ctx, zone, "10.0.0.2:53") // a given server
//	// gws: ["192.0.2.1:8443", "192.0.2.2:8443"], ttl: the records' lowest TTL
//
// The SRV records are ordered as RFC 2782 says (lowest priority first,
// then a weighted random order within a priority); targets of "." (no
// service) are left out. A target's address comes from the reply's
// additional section or, when missing there, from A and AAAA queries to
// the same server; one HOST:PORT per target, its first IPv4 address
// before its first IPv6 one, or the target's name when it has no address
// in DNS (the dialer then resolves it). Queries go over UDP with EDNS0 and
// are retried over TCP when truncated. With no server given, the servers
// of /etc/resolv.conf are asked in order until one answers.
//
// A [Watcher] keeps the list current: it resolves again when the records'
// TTL runs out (bounded to MinInterval..MaxInterval, 5 s..5 min by
// default), reports each change on its Changes channel, and when DNS
// fails or publishes no gateway it keeps the last list it knew (or the
// Initial one the caller saved), logging the failure once per change of
// error and the recovery once.
//
// This package is under pkg/: it imports no component and no store, so
// the tunnel client may link it.
package discovery
