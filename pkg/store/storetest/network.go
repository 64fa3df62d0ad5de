package storetest

import (
	"errors"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testNetwork: network rules are recorded with their event, listed by ID,
// refused when malformed or duplicated (changing nothing), removed once,
// never reuse an ID, and every change is delivered to a watcher as
// ChangeNetwork.
func testNetwork(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := watch(t, s)
	next := w.next

	add := func(r store.NetworkRule) (store.NetworkRule, error) {
		return s.AddNetworkRule(ctx, r, ev(audit.NetworkRuleAdded, r.CIDR))
	}
	deny := store.NetworkRule{Effect: store.Deny, CIDR: "192.0.2.0/24", Listener: store.ListenerAll, Comment: "scanner", CreatedBy: "admin", CreatedAt: t0}
	d, err := add(deny)
	must(t, "AddNetworkRule deny", err)
	next(store.Change{Kind: store.ChangeNetwork, ID: strconv.FormatInt(d.ID, 10)})
	if d.ID <= 0 {
		t.Fatalf("AddNetworkRule ID = %d; want a positive ID", d.ID)
	}
	checkUTC(t, "AddNetworkRule", d.CreatedAt)
	allow := store.NetworkRule{Effect: store.Allow, CIDR: "2001:db8::/32", Listener: store.ListenerQUIC, CreatedBy: "admin", CreatedAt: t0}
	a, err := add(allow)
	must(t, "AddNetworkRule allow", err)
	next(store.Change{Kind: store.ChangeNetwork, ID: strconv.FormatInt(a.ID, 10)})
	if a.ID <= d.ID {
		t.Errorf("second rule's ID %d is not above the first's %d", a.ID, d.ID)
	}

	// The same rule again, and malformed ones, are refused and change
	// nothing (no event, no change).
	before := len(verified(t, s))
	_, err = add(deny)
	checkErr(t, "AddNetworkRule duplicate", err, store.ErrExists)
	for _, bad := range []store.NetworkRule{
		{Effect: "maybe", CIDR: "10.0.0.0/8", Listener: store.ListenerAll},
		{Effect: store.Deny, CIDR: "10.1.2.3/8", Listener: store.ListenerAll}, // not masked
		{Effect: store.Deny, CIDR: "10.0.0.0", Listener: store.ListenerAll},   // no prefix length
		{Effect: store.Deny, CIDR: "10.0.0.0/8", Listener: "smtp"},            // unknown listener
		{Effect: store.Deny, CIDR: "::ffff:10.0.0.0/104", Listener: "api"},    // IPv4-mapped
		{Effect: store.Deny, CIDR: "10.0.0.0/8", Listener: "api", Comment: string(make([]byte, store.MaxNetworkComment+1))},
	} {
		if _, err := add(bad); err == nil || errors.Is(err, store.ErrExists) {
			t.Errorf("AddNetworkRule(%+v) = %v; want a refusal of the malformed rule", bad, err)
		}
	}
	if n := len(verified(t, s)); n != before {
		t.Errorf("refused rules appended %d events; want none", n-before)
	}

	// The same network with another effect or listener is another rule.
	o, err := add(store.NetworkRule{Effect: store.Allow, CIDR: "192.0.2.0/24", Listener: store.ListenerAll, CreatedBy: "admin", CreatedAt: t0})
	must(t, "AddNetworkRule other effect", err)
	next(store.Change{Kind: store.ChangeNetwork, ID: strconv.FormatInt(o.ID, 10)})

	rules, err := s.ListNetworkRules(ctx)
	must(t, "ListNetworkRules", err)
	want := []store.NetworkRule{d, a, o}
	if diff := cmp.Diff(want, rules, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ListNetworkRules (-want +got):\n%s", diff)
	}
	if want := audit.Normalize(t0); !rules[0].CreatedAt.Equal(want) {
		t.Errorf("CreatedAt = %v; want %v", rules[0].CreatedAt, want)
	}

	must(t, "DeleteNetworkRule", s.DeleteNetworkRule(ctx, o.ID, ev(audit.NetworkRuleRemoved, strconv.FormatInt(o.ID, 10))))
	next(store.Change{Kind: store.ChangeNetwork, ID: strconv.FormatInt(o.ID, 10)})
	before = len(verified(t, s))
	checkErr(t, "DeleteNetworkRule again", s.DeleteNetworkRule(ctx, o.ID, ev(audit.NetworkRuleRemoved, "again")), store.ErrNotFound)
	checkErr(t, "DeleteNetworkRule unknown", s.DeleteNetworkRule(ctx, 999999, ev(audit.NetworkRuleRemoved, "999999")), store.ErrNotFound)
	if n := len(verified(t, s)); n != before {
		t.Errorf("refused removals appended %d events; want none", n-before)
	}

	// The ID of the last rule, once removed, is not reused.
	n, err := add(store.NetworkRule{Effect: store.Deny, CIDR: "198.51.100.7/32", Listener: store.ListenerSSH, CreatedBy: "admin", CreatedAt: t0})
	must(t, "AddNetworkRule after removal", err)
	if n.ID <= o.ID {
		t.Errorf("a rule added after rule %d was removed got ID %d; IDs must never be reused", o.ID, n.ID)
	}
	next(store.Change{Kind: store.ChangeNetwork, ID: strconv.FormatInt(n.ID, 10)})

	evs := verified(t, s)
	var added, removed int
	for _, e := range evs {
		switch e.Type {
		case audit.NetworkRuleAdded:
			added++
		case audit.NetworkRuleRemoved:
			removed++
		}
	}
	if added != 4 || removed != 1 {
		t.Errorf("the log holds %d %s and %d %s events; want 4 and 1", added, audit.NetworkRuleAdded, removed, audit.NetworkRuleRemoved)
	}
}
