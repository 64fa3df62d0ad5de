package dnsserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// GatewayLister is the part of store.Store that StoreSource reads.
type GatewayLister interface {
	ListGateways(ctx context.Context) ([]store.Gateway, error)
}

// StoreSource is the RecordSource of a gateway: the live gateways of the
// store's heartbeats and a fixed list of published nodes.
type StoreSource struct {
	// Store lists the gateways (the gateway's store.Store).
	Store GatewayLister
	// Clock decides which gateways are alive; nil means time.Now.
	Clock func() time.Time
	// Published are the nodes an operator publishes (a flag or the
	// config file); nil for none.
	Published []Node
}

// Gateways returns the gateways alive now, as GatewayFromStore makes them.
func (s *StoreSource) Gateways(ctx context.Context) ([]Gateway, error) {
	all, err := s.Store.ListGateways(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if s.Clock != nil {
		now = s.Clock()
	}
	var out []Gateway
	for _, g := range all {
		if g.Alive(now) {
			out = append(out, GatewayFromStore(g))
		}
	}
	return out, nil
}

// Nodes returns Published.
func (s *StoreSource) Nodes(context.Context) ([]Node, error) { return s.Published, nil }

// GatewayFromStore turns a heartbeat record into what DNS publishes: the
// host of APIAddr (or of QUICAddr) as its address, or as its Host when it
// is a name; QUICAddr's port for _tunnel._udp and APIAddr's for
// _tunnel._tcp. A wildcard host (0.0.0.0, ::) gives no address.
func GatewayFromStore(g store.Gateway) Gateway {
	out := Gateway{ID: g.ID}
	for _, hp := range []string{g.APIAddr, g.QUICAddr} {
		host, _, err := net.SplitHostPort(hp)
		if err != nil || host == "" {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if a = a.Unmap().WithZone(""); !a.IsUnspecified() && len(out.Addrs) == 0 {
				out.Addrs = []netip.Addr{a}
			}
		} else if out.Host == "" {
			out.Host = host
		}
	}
	if len(out.Addrs) > 0 {
		out.Host = ""
	}
	out.QUICPort = port(g.QUICAddr)
	out.APIPort = port(g.APIAddr)
	return out
}

func port(hostport string) uint16 {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// ParseNode parses an operator's "NAME=ADDR[,ADDR...]" (a --dns-node flag
// value): NAME relative to the zone, each ADDR an IPv4 or IPv6 address.
func ParseNode(s string) (Node, error) {
	name, list, ok := strings.Cut(s, "=")
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if !ok || list == "" {
		return Node{}, fmt.Errorf("node %q: want NAME=ADDRESS[,ADDRESS...], for example web-1=10.0.0.5", s)
	}
	if !validNodeName(name) {
		return Node{}, fmt.Errorf("node %q: the name must be labels of a-z, 0-9 and '-' joined by dots, not starting with gw-", s)
	}
	n := Node{Name: name}
	for _, a := range strings.Split(list, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil || ip.IsUnspecified() {
			return Node{}, fmt.Errorf("node %q: %q is not an IP address", s, a)
		}
		n.Addrs = append(n.Addrs, ip.Unmap())
	}
	return n, nil
}
