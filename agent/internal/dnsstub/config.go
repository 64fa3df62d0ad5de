package dnsstub

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// Suggested is the listen address the error messages suggest. It is not
// 127.0.0.53 or 127.0.0.54: systemd-resolved answers there on most
// distributions.
const Suggested = "127.0.0.153:53"

// Domain is the top-level domain the stub answers for: NAME.CLUSTER.tunnel.
const Domain = "tunnel"

// Defaults of the Config fields left zero.
const (
	DefaultRate            = 200 // queries per second per source address
	DefaultBurst           = 400
	DefaultMaxTCPConns     = 64
	DefaultTCPTimeout      = 5 * time.Second
	DefaultUpstreamTimeout = 2 * time.Second
	DefaultMaxForwards     = 64
	// TTL is the TTL of every record the stub makes (answers and the SOA
	// used for negative caching): short, so a changed listener address is
	// seen within seconds.
	TTL = 5
)

// Config is what Start needs. Listen, Cluster and Names come from the
// agent's configuration; the other fields have working defaults.
type Config struct {
	// Listen is the loopback IP:PORT the stub answers on, over UDP and TCP
	// (port 0 picks a free port, for tests).
	Listen string
	// Cluster is the cluster's name: the stub answers NAME.CLUSTER.tunnel.
	Cluster string
	// Names maps a listener's name to its IP address (the host part of
	// its listen address). 0.0.0.0 is answered as 127.0.0.1 and :: as ::1.
	Names map[string]netip.Addr
	// Upstream, if not empty, is the IP[:PORT] of a resolver that answers
	// every name outside CLUSTER.tunnel.; empty (the default) refuses them.
	Upstream string
	// Log receives the stub's events; nil uses slog.Default.
	Log *slog.Logger

	// RatePerSecond and Burst limit the queries of one source address
	// (a token bucket); above it queries are dropped.
	RatePerSecond float64
	Burst         int
	// MaxTCPConns bounds the open TCP connections: a new one beyond it
	// closes the oldest, so idle clients cannot lock others out.
	MaxTCPConns int
	// TCPTimeout is how long a TCP connection may stay silent (before its
	// first query and between queries) before it is closed.
	TCPTimeout time.Duration
	// UpstreamTimeout bounds one forwarded query (SERVFAIL after it).
	UpstreamTimeout time.Duration
	// MaxForwards bounds the forwarded queries in flight (SERVFAIL beyond).
	MaxForwards int
	// Now is the clock of the rate limiter; nil uses time.Now.
	Now func() time.Time
}

// ErrConfig is wrapped by every validation error (a *ConfigError).
var ErrConfig = errors.New("invalid DNS stub configuration")

// ConfigError is a validation error: one sentence naming the YAML key
// ("dns.listen 0.0.0.0:53: the agent's DNS answers on a loopback address
// only: use 127.0.0.153:53"). The agent's configuration reader may take Key
// and Msg apart to add the line number.
type ConfigError struct {
	Key   string // dns.listen, dns.upstream, cluster, listen
	Value string // the value refused, "" if it was missing
	Msg   string // what to do
}

func (e *ConfigError) Error() string {
	if e.Value == "" {
		return e.Key + ": " + e.Msg
	}
	return e.Key + " " + e.Value + ": " + e.Msg
}

func (e *ConfigError) Unwrap() error { return ErrConfig }

func invalid(key, value, msg string) error {
	return &ConfigError{Key: key, Value: value, Msg: msg}
}

// CheckListen checks dns.listen: a loopback IP and a port.
func CheckListen(listen string) (netip.AddrPort, error) {
	if listen == "" {
		return netip.AddrPort{}, invalid("dns.listen", "", "give the loopback IP:PORT the agent's DNS answers on, for example "+Suggested)
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return netip.AddrPort{}, invalid("dns.listen", listen, "not an IP:PORT: use a loopback address and a port, for example "+Suggested)
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return netip.AddrPort{}, invalid("dns.listen", listen, "the agent's DNS answers on a loopback address only: use "+Suggested)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// CheckUpstream checks dns.upstream: empty, or an IP with an optional
// port (53 by default). A host name is refused: finding the resolver must
// not need a resolver.
func CheckUpstream(upstream string, listen netip.AddrPort) (string, error) {
	if upstream == "" {
		return "", nil
	}
	var ap netip.AddrPort
	if a, err := netip.ParseAddr(upstream); err == nil {
		ap = netip.AddrPortFrom(a, 53)
	} else if p, err := netip.ParseAddrPort(upstream); err == nil {
		ap = p
	} else {
		return "", invalid("dns.upstream", upstream, "not an IP address or IP:PORT: give the resolver's address, for example 10.0.0.2 or 10.0.0.2:53, or leave it empty to refuse names outside the cluster")
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap.Port() == 0 {
		return "", invalid("dns.upstream", upstream, "port 0 is not a resolver's port: give IP:PORT, for example 10.0.0.2:53")
	}
	if ap.Addr().IsUnspecified() || ap == listen {
		return "", invalid("dns.upstream", upstream, "this would forward queries to the stub itself: name another resolver or leave dns.upstream empty")
	}
	return ap.String(), nil
}

// CheckCluster checks the cluster's name and returns the zone,
// "CLUSTER.tunnel." in lower case.
func CheckCluster(cluster string) (string, error) {
	if err := identity.ValidateName("cluster", cluster); err != nil {
		return "", invalid("cluster", cluster, "the DNS stub needs the agent's cluster name: "+strings.TrimPrefix(err.Error(), identity.ErrInvalidName.Error()+": "))
	}
	zone := lowerASCII(cluster) + "." + Domain + "."
	if _, ok := dns.IsDomainName(zone); !ok || strings.Contains(cluster, "..") || strings.HasSuffix(cluster, ".") {
		return "", invalid("cluster", cluster, "the cluster name does not make a DNS name")
	}
	return zone, nil
}

// CheckNames checks the listener names and addresses and returns them with
// lower-case names and unspecified addresses turned into loopback ones.
func CheckNames(names map[string]netip.Addr) (map[string]netip.Addr, error) {
	out := make(map[string]netip.Addr, len(names))
	for name, a := range names {
		if err := identity.ValidateName("listener", name); err != nil {
			return nil, invalid("listen", name, "this listener name cannot be a DNS name: "+strings.TrimPrefix(err.Error(), identity.ErrInvalidName.Error()+": "))
		}
		if strings.Contains(name, "..") || strings.HasSuffix(name, ".") {
			return nil, invalid("listen", name, "this listener name cannot be a DNS name: dots must separate non-empty labels")
		}
		if !a.IsValid() {
			return nil, invalid("listen", name, "the listener has no IP address to answer with")
		}
		a = a.Unmap()
		if a.IsUnspecified() {
			if a.Is4() {
				a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			} else {
				a = netip.IPv6Loopback()
			}
		}
		out[lowerASCII(name)] = a.WithZone("")
	}
	return out, nil
}

// normalize validates cfg and fills the defaults.
func (cfg Config) normalize() (Config, netip.AddrPort, string, error) {
	listen, err := CheckListen(cfg.Listen)
	if err != nil {
		return cfg, listen, "", err
	}
	zone, err := CheckCluster(cfg.Cluster)
	if err != nil {
		return cfg, listen, "", err
	}
	if cfg.Names, err = CheckNames(cfg.Names); err != nil {
		return cfg, listen, "", err
	}
	if cfg.Upstream, err = CheckUpstream(cfg.Upstream, listen); err != nil {
		return cfg, listen, "", err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RatePerSecond <= 0 {
		cfg.RatePerSecond = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = DefaultMaxTCPConns
	}
	if cfg.TCPTimeout <= 0 {
		cfg.TCPTimeout = DefaultTCPTimeout
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if cfg.MaxForwards <= 0 {
		cfg.MaxForwards = DefaultMaxForwards
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, listen, zone, nil
}

// lowerASCII lowers A-Z only: DNS case-insensitivity is ASCII's (RFC 4343),
// and Unicode folding (the Kelvin sign to k) must not make two names equal.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s)
}

// hostPort formats an address for the error messages of Start.
func hostPort(ap netip.AddrPort) string {
	return net.JoinHostPort(ap.Addr().String(), strconv.Itoa(int(ap.Port())))
}
