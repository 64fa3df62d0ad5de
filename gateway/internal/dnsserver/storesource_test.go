package dnsserver

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

type listerFunc func(context.Context) ([]store.Gateway, error)

func (f listerFunc) ListGateways(ctx context.Context) ([]store.Gateway, error) { return f(ctx) }

func TestGatewayFromStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   store.Gateway
		want Gateway
	}{
		{"IPv4", store.Gateway{ID: "a", APIAddr: "192.0.2.1:8443", QUICAddr: "192.0.2.1:8443"},
			Gateway{ID: "a", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, QUICPort: 8443, APIPort: 8443}},
		{"IPv6, different ports", store.Gateway{ID: "b", APIAddr: "[2001:db8::1]:443", QUICAddr: "[2001:db8::1]:7443"},
			Gateway{ID: "b", Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, QUICPort: 7443, APIPort: 443}},
		{"wildcard bind: no address", store.Gateway{ID: "c", APIAddr: "0.0.0.0:8443", QUICAddr: "[::]:8443"},
			Gateway{ID: "c", QUICPort: 8443, APIPort: 8443}},
		{"host name", store.Gateway{ID: "d", APIAddr: "gw.example.net:8443", QUICAddr: "gw.example.net:8443"},
			Gateway{ID: "d", Host: "gw.example.net", QUICPort: 8443, APIPort: 8443}},
		{"garbage", store.Gateway{ID: "e", APIAddr: "nonsense", QUICAddr: ""}, Gateway{ID: "e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := GatewayFromStore(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("GatewayFromStore(%+v)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestStoreSourceKeepsLiveGateways(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src := &StoreSource{Clock: func() time.Time { return now }, Store: listerFunc(func(context.Context) ([]store.Gateway, error) {
		return []store.Gateway{
			{ID: "live", APIAddr: "192.0.2.1:1", QUICAddr: "192.0.2.1:1", HeartbeatAt: now.Add(-10 * time.Second), AliveFor: 30 * time.Second},
			{ID: "dead", APIAddr: "192.0.2.2:1", QUICAddr: "192.0.2.2:1", HeartbeatAt: now.Add(-31 * time.Second), AliveFor: 30 * time.Second},
		}, nil
	})}
	gws, err := src.Gateways(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(gws) != 1 || gws[0].ID != "live" {
		t.Fatalf("Gateways = %+v; want only the live one", gws)
	}
	failing := &StoreSource{Store: listerFunc(func(context.Context) ([]store.Gateway, error) { return nil, errors.New("down") })}
	if _, err := failing.Gateways(context.Background()); err == nil {
		t.Fatal("a failing store gave no error")
	}
}

func TestParseNode(t *testing.T) {
	n, err := ParseNode("Web-1.EU=10.0.0.5, 2001:db8::5")
	if err != nil {
		t.Fatal(err)
	}
	want := Node{Name: "web-1.eu", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("2001:db8::5")}}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("ParseNode = %+v; want %+v", n, want)
	}
	for in, msg := range map[string]string{
		"web-1":            "want NAME=ADDRESS",
		"web-1=":           "want NAME=ADDRESS",
		"gw-1=10.0.0.1":    "not starting with gw-",
		"a_b=10.0.0.1":     "labels of a-z",
		"web=10.0.0":       "not an IP address",
		"web=0.0.0.0":      "not an IP address",
		"-web=10.0.0.1":    "labels of a-z",
		"web..eu=10.0.0.1": "labels of a-z",
	} {
		if _, err := ParseNode(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseNode(%q) = %v; want an error with %q", in, err, msg)
		}
	}
}
