package store

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// NetworkStore holds the cluster-wide network allow/deny rules: which
// source networks may reach the gateways' API, QUIC and jump host
// listeners (docs/NETWORK.md). Every gateway enforces them at accept
// (pkg/netguard's ACL), and applies every change live: the store emits a
// ChangeNetwork for each.
type NetworkStore interface {
	// AddNetworkRule records r (its ID is ignored) and appends ev, in one
	// transaction, and returns r with its ID and CreatedAt as stored. IDs
	// grow and are never reused. r must pass CheckNetworkRule (a plain
	// error otherwise); the same effect, CIDR and listener twice gives
	// ErrExists.
	AddNetworkRule(ctx context.Context, r NetworkRule, ev audit.Event) (NetworkRule, error)
	// ListNetworkRules returns every rule, by ID.
	ListNetworkRules(ctx context.Context) ([]NetworkRule, error)
	// DeleteNetworkRule removes the rule id and appends ev; an unknown id
	// gives ErrNotFound.
	DeleteNetworkRule(ctx context.Context, id int64, ev audit.Event) error
}

// ChangeNetwork: a network rule was added or removed. ID is its ID.
const ChangeNetwork ChangeKind = "network"

// Listeners a network rule applies to.
const (
	ListenerAPI  = "api"  // the HTTPS API (and QUIC over TCP, which it carries)
	ListenerQUIC = "quic" // QUIC, over UDP and over TCP, for agents and clients
	ListenerSSH  = "ssh"  // the SSH jump host
	ListenerAll  = "all"  // every one of them
)

// Listeners lists the valid NetworkRule.Listener values.
var Listeners = []string{ListenerAPI, ListenerQUIC, ListenerSSH, ListenerAll}

// NetworkRule allows or denies a source network on a listener. Deny wins;
// if any allow rule applies to a listener, only the sources an allow rule
// matches get in (an allow-list); with none, every source not denied does.
type NetworkRule struct {
	ID     int64
	Effect Effect
	// CIDR is a canonical (masked) prefix: "10.0.0.0/8", "2001:db8::/32",
	// "192.0.2.7/32".
	CIDR string
	// Listener is ListenerAPI, ListenerQUIC, ListenerSSH or ListenerAll.
	Listener  string
	Comment   string
	CreatedBy string
	CreatedAt time.Time
}

// MaxNetworkComment bounds NetworkRule.Comment, in bytes.
const MaxNetworkComment = 256

// CheckNetworkRule reports what is wrong with r as stored: its effect, a
// CIDR that is not a canonical prefix, an unknown listener, or a comment
// too long. Stores call it; the API canonicalises first (ParseNetworkCIDR).
func CheckNetworkRule(r NetworkRule) error {
	if r.Effect != Allow && r.Effect != Deny {
		return fmt.Errorf("effect %q is neither %q nor %q", r.Effect, Allow, Deny)
	}
	p, err := netip.ParsePrefix(r.CIDR)
	if err != nil || p != p.Masked() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return fmt.Errorf("%q is not a canonical network prefix (such as 10.0.0.0/8 or 2001:db8::/32)", r.CIDR)
	}
	if !slices.Contains(Listeners, r.Listener) {
		return fmt.Errorf("listener %q is not one of api, quic, ssh or all", r.Listener)
	}
	if len(r.Comment) > MaxNetworkComment {
		return fmt.Errorf("the comment is longer than %d bytes", MaxNetworkComment)
	}
	return nil
}

// ParseNetworkCIDR reads a network as an operator writes it: a prefix
// ("10.0.0.0/8", "10.1.2.3/8" is masked to "10.0.0.0/8") or a single
// address ("192.0.2.7" is "192.0.2.7/32", "2001:db8::1" is
// "2001:db8::1/128"). IPv4-mapped IPv6 addresses are taken as IPv4.
func ParseNetworkCIDR(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone: give a network without one", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a network (10.0.0.0/8, 2001:db8::/32) nor an address", s)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q mixes IPv4-mapped addresses with a prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
