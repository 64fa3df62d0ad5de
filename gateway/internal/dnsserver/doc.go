// Package dnsserver is the gateway's authoritative DNS server for the
// cluster's zone (ISSUE10 §1): agents and clients find the live gateways
// with one SRV query instead of a static list.
//
// # What it answers
//
// For the zone ZONE (say "prod.tunnel.example.com."):
//
//	_tunnel._udp.ZONE  SRV  0 10 QUICPORT gw-ID.ZONE.   one per live gateway (agents dial QUIC there)
//	_tunnel._tcp.ZONE  SRV  0 10 APIPORT  gw-ID.ZONE.   one per live gateway (HTTPS API, QUIC over TCP)
//	gw-ID.ZONE         A/AAAA                          the gateway's advertised address(es)
//	NAME.ZONE          A/AAAA                          nodes an operator publishes (RecordSource.Nodes)
//	ZONE               SOA, NS                         NS: the live gateways, or Server.NameServers
//
// The SRV targets' addresses ride in the additional section. Inside the
// zone every answer is authoritative (AA=1) and never recursive (RA=0): a
// name that does not exist gets NXDOMAIN, a name that exists without the
// asked type gets NODATA, both with the SOA in the authority section
// (negative TTL = the records' TTL). A name outside the zone, a class other
// than IN, and ANY, AXFR and IXFR get REFUSED; opcodes other than QUERY get
// NOTIMP; a malformed query FORMERR (or nothing, when not even its header
// parses, or when it is a response). Over UDP an answer larger than the
// client's EDNS0 size (512 without EDNS0, at most MaxUDPSize) first loses
// its additional section, then is truncated with TC set, and the client
// retries over TCP.
//
// A gateway ID becomes one DNS label: lower-cased, every character other
// than a-z, 0-9 and '-' replaced by '-', cut to 63 bytes ("gw-" included).
// A gateway whose advertised address is a wildcard (0.0.0.0, ::) has no
// usable address: it is left out (give it --advertise-addr); one that
// advertises a host name instead of an address is published with that
// name as its SRV target and no A/AAAA of its own.
//
// # Where the records come from
//
// The gateway implements [RecordSource]; [StoreSource] is the ready-made
// one: it lists the gateways from the store's heartbeats (pkg/store
// ListGateways, keeping those Alive now) and publishes a fixed list of
// operator nodes. The server asks its source at most once per CacheFor
// (1 s by default), whatever the query rate; one refresh at a time, the
// others answer from the previous snapshot. When the source fails the last
// good snapshot keeps being served for up to MaxStale (2 min), then
// queries get SERVFAIL; the failure and the recovery are logged once each.
// Records carry a short TTL (30 s) so that a gateway that stops
// heartbeating drops out of resolvers' caches quickly.
//
// # Hostile clients
//
// The server owns its goroutines and its sockets: a fixed pool of UDP
// workers (no goroutine per packet), one goroutine per TCP connection under
// a per-source and a total cap (pkg/netguard), a read deadline on every
// message (ReadTimeout) and an idle deadline between messages
// (IdleTimeout), at most MaxTCPQueries queries per connection, a per-source
// token bucket (RateLimit/RateBurst, an IPv4 address or an IPv6 /64) that
// drops excess UDP queries silently (no reflection) and answers excess TCP
// queries with REFUSED, and a recover (pkg/panics) around every query and
// every connection. Garbage over TCP closes that connection.
//
// # Use
//
//	srv := &dnsserver.Server{
//		Zone:   "prod.tunnel.example.com",
//		Source: &dnsserver.StoreSource{Store: st, Clock: clock, Published: nodes},
//		Log:    log,
//	}
//	udp, _ := net.ListenPacket("udp", addr)
//	tcp, _ := net.Listen("tcp", addr)
//	go func() { errc <- srv.Serve(udp, tcp) }() // Serve owns and closes both
//	...
//	srv.Shutdown(ctx)                            // or Close; both safe twice
//	err := <-errc                                // ErrServerClosed after a shutdown
package dnsserver
