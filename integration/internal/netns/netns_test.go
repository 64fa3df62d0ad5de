package netns

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// The namespace-creating paths need root and are tested in
// integration/bench_netns_test.go and benchrun's TestNetnsTopologyCleanup;
// these are the checks that run anywhere.

func TestPrefixIsRecognisedAsStale(t *testing.T) {
	p := Prefix("bench")
	if want := fmt.Sprintf("tn-bench-%d-", os.Getpid()); p != want {
		t.Fatalf("Prefix = %q, want %q", p, want)
	}
	m := staleRE.FindStringSubmatch(p + "srv")
	if m == nil || m[1] != fmt.Sprint(os.Getpid()) {
		t.Fatalf("staleRE on %q: %q", p+"srv", m)
	}
	for _, other := range []string{"cni-1234", "tn-bench-x-srv", "mynet"} {
		if staleRE.MatchString(other) {
			t.Errorf("staleRE matches %q, which is not ours", other)
		}
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []string{"", "../etc", "a/b", strings.Repeat("x", 70)} {
		if _, err := Add(ctx, bad); err == nil || !strings.Contains(err.Error(), "bad namespace name") {
			t.Errorf("Add(%q) = %v, want a bad-name refusal", bad, err)
		}
	}
	for _, bad := range []string{"10.0.0.0/30", "2001:db8::/64"} {
		_, err := NewLAN(ctx, "tn-unit-0-", netip.MustParsePrefix(bad), 1500, "a")
		if err == nil || !strings.Contains(err.Error(), "want an IPv4 prefix") {
			t.Errorf("NewLAN(%s) = %v, want a subnet refusal", bad, err)
		}
	}
	if _, err := NewLAN(ctx, "tn-unit-0-", netip.MustParsePrefix("10.0.0.0/29"), 1500, "a", "b", "c", "d", "e", "f", "g"); err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Errorf("7 hosts in a /29: %v, want a refusal", err)
	}
}

func TestMTUParse(t *testing.T) {
	out := "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT"
	if m := mtuRE.FindStringSubmatch(out); m == nil || m[1] != "1500" {
		t.Fatalf("mtuRE on %q: %q", out, m)
	}
}
