package access

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// Source networks. A role with Sources counts for a caller only when the
// caller's source address is in one of them; a role without Sources counts
// from anywhere. A caller whose roles all stop counting is refused with a
// sentence naming the source and the roles (SourceRefusal), and the SSH
// certificate of a login carries OpenSSH's source-address critical option,
// the union of the Sources of the roles that granted its logins, so that a
// stock sshd enforces the same rule (none if one of those roles has no
// Sources).

// ParseSource parses a role's source network: a CIDR ("10.0.0.0/8") or a
// single address (a /32 or /128). The result is masked to its network
// (10.1.2.3/8 is 10.0.0.0/8); an IPv4-mapped IPv6 network is made IPv4.
func ParseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("source %q is not a network: give a CIDR such as 10.0.0.0/8 or an address", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("source %q is not a network: give a CIDR such as 10.0.0.0/8 or an address", s)
	}
	if a := p.Addr(); a.Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("source %q mixes IPv4 and IPv6: give the IPv4 network", s)
		}
		p = netip.PrefixFrom(a.Unmap(), bits)
	}
	return p.Masked(), nil
}

// ParseAddr parses a caller's source address as the gateway records it
// ("192.0.2.1", "192.0.2.1:5000", "[2001:db8::1]:22"). It returns the zero
// Addr, which is in no network, for anything else.
func ParseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap()
	}
	return netip.Addr{}
}

// source is the caller's address for a decision. check false means the
// decision does not apply source networks (a pre-check whose caller
// decides again with the source); check true with an invalid addr means
// the source is unknown, and roles with Sources do not count.
type source struct {
	addr  netip.Addr
	check bool
}

// anySource applies no source networks.
var anySource = source{}

// from is the source addr, applied.
func from(addr netip.Addr) source { return source{addr: addr.Unmap(), check: true} }

func (s source) String() string {
	if !s.addr.IsValid() {
		return "an unknown address"
	}
	return s.addr.String()
}

// counts reports whether role r counts for a caller at s.
func (s source) counts(r store.Role) bool {
	if !s.check || len(r.Sources) == 0 {
		return true
	}
	if !s.addr.IsValid() {
		return false
	}
	for _, n := range r.Sources {
		p, err := ParseSource(n)
		if err == nil && p.Contains(s.addr) {
			return true
		}
	}
	return false
}

// OutsideRole is a role that would have counted but for the caller's
// source address.
type OutsideRole struct {
	Name    string
	Sources []string
	// Logins are the role's logins.
	Logins []string
}

// SourceRefusal is the sentence a caller at src is refused with when the
// only roles that would allow what they ask are outside: it names the
// source and the roles with their networks, and says what to do.
func SourceRefusal(src netip.Addr, outside []OutsideRole) string {
	s := from(src)
	if len(outside) == 1 {
		o := outside[0]
		return fmt.Sprintf("you connect from %s, and role %s applies only from %s: connect from one of its networks or ask an admin to add yours (tunnel admin roles update %s --source CIDR)",
			s, o.Name, strings.Join(o.Sources, ", "), o.Name)
	}
	parts := make([]string, 0, len(outside))
	for _, o := range outside {
		parts = append(parts, fmt.Sprintf("%s (%s)", o.Name, strings.Join(o.Sources, ", ")))
	}
	return fmt.Sprintf("you connect from %s, and roles %s apply only from their networks: connect from one of them or ask an admin to add yours (tunnel admin roles update ROLE --source CIDR)",
		s, strings.Join(parts, ", "))
}

func outsideOf(r store.Role) OutsideRole {
	return OutsideRole{Name: r.Name, Sources: slices.Clone(r.Sources), Logins: slices.Clone(r.Logins)}
}

// certSources is the source-address of a login's SSH certificate: the
// union of the Sources of the roles that grant its logins, or none when
// one of them counts from anywhere.
func certSources(granting []store.Role) []string {
	var out []string
	for _, r := range granting {
		if len(r.Logins) == 0 {
			continue
		}
		if len(r.Sources) == 0 {
			return nil
		}
		out = append(out, r.Sources...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
