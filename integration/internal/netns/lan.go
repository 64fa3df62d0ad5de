package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// DefaultMTU is the MTU of an Ethernet link, and of every link a LAN makes
// unless told otherwise.
const DefaultMTU = 1500

// HostIface is the name of each host's interface on a LAN.
const HostIface = "eth0"

// LAN is a few hosts on one Ethernet segment: one namespace per host, each
// with an interface eth0 (one end of a veth pair) whose other end is a port
// of a bridge in a switch namespace of its own. Every link and the bridge
// have the same MTU. Traffic between two hosts crosses veth → bridge →
// veth: no routing, no NAT, no firewall.
type LAN struct {
	MTU    int
	Switch *NS
	Hosts  []*Host

	mu     sync.Mutex
	closed bool
}

// Host is one machine on a LAN.
type Host struct {
	*NS
	Label string     // the name NewLAN was given ("client", "server")
	Addr  netip.Addr // its address on eth0
	Iface string     // "eth0"
}

// NewLAN creates the switch namespace PREFIX+"sw" with a bridge, and one
// namespace PREFIX+LABEL per label, connected to the bridge by a veth pair;
// host i gets address subnet.Addr()+i+1 (so 10.99.0.0/24 gives .1, .2, ...).
// mtu 0 means DefaultMTU. On error everything created so far is deleted.
func NewLAN(ctx context.Context, prefix string, subnet netip.Prefix, mtu int, labels ...string) (_ *LAN, err error) {
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if !subnet.Addr().Is4() || subnet.Bits() > 29 || subnet.Bits() < 8 {
		return nil, fmt.Errorf("netns: subnet %s: want an IPv4 prefix between /8 and /29", subnet)
	}
	subnet = subnet.Masked()
	if len(labels) == 0 || len(labels) > 200 || len(labels) > 1<<(32-subnet.Bits())-2 {
		return nil, fmt.Errorf("netns: %d hosts do not fit in %s", len(labels), subnet)
	}
	if _, err := ipBin(); err != nil {
		return nil, err
	}
	l := &LAN{MTU: mtu}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	if l.Switch, err = Add(ctx, prefix+"sw"); err != nil {
		return nil, err
	}
	mtuS := fmt.Sprint(mtu)
	if _, err = l.Switch.IP(ctx, "link", "add", "br0", "mtu", mtuS, "type", "bridge"); err != nil {
		return nil, err
	}
	if _, err = l.Switch.IP(ctx, "link", "set", "br0", "up"); err != nil {
		return nil, err
	}
	addr := subnet.Addr()
	for i, label := range labels {
		addr = addr.Next()
		ns, err := Add(ctx, prefix+label)
		if err != nil {
			return nil, err
		}
		h := &Host{NS: ns, Label: label, Addr: addr, Iface: HostIface}
		l.Hosts = append(l.Hosts, h)
		port := fmt.Sprintf("p%d", i)
		// Created in the switch namespace with the peer straight in the
		// host's: no interface ever appears in this process's namespace.
		if _, err := l.Switch.IP(ctx, "link", "add", port, "mtu", mtuS, "type", "veth",
			"peer", "name", HostIface, "mtu", mtuS, "netns", ns.Name); err != nil {
			return nil, err
		}
		for _, args := range [][]string{
			{"link", "set", port, "master", "br0"},
			{"link", "set", port, "up"},
		} {
			if _, err := l.Switch.IP(ctx, args...); err != nil {
				return nil, err
			}
		}
		cidr := netip.PrefixFrom(addr, subnet.Bits()).String()
		for _, args := range [][]string{
			{"addr", "add", cidr, "dev", HostIface},
			{"link", "set", HostIface, "up"},
		} {
			if _, err := ns.IP(ctx, args...); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// Host returns the host with the given label, or nil.
func (l *LAN) Host(label string) *Host {
	for _, h := range l.Hosts {
		if h.Label == label {
			return h
		}
	}
	return nil
}

// Namespaces lists every namespace of the LAN, the switch's first.
func (l *LAN) Namespaces() []*NS {
	var out []*NS
	if l.Switch != nil {
		out = append(out, l.Switch)
	}
	for _, h := range l.Hosts {
		out = append(out, h.NS)
	}
	return out
}

// Close deletes every namespace of the LAN (hosts first, then the switch),
// which removes every veth and the bridge. Safe to call twice.
func (l *LAN) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for i := len(l.Hosts) - 1; i >= 0; i-- {
		if err := l.Hosts[i].Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Switch != nil {
		if err := l.Switch.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
