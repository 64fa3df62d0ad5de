package benchrun

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/netns"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

func TestParseFlagsTopology(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Topology != TopologyLoopback {
		t.Errorf("default topology %q, want loopback", c.Topology)
	}
	c, err = parseFlags([]string{"--topology", "netns", "--mtu", "9000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Topology != TopologyNetns || c.MTU != 9000 {
		t.Errorf("got %q MTU %d", c.Topology, c.MTU)
	}
	for _, bad := range [][]string{
		{"--topology", "bridge"},
		{"--mtu", "1500"}, // loopback has no MTU knob
		{"--topology", "netns", "--mtu", "100"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMarkersAndHeader(t *testing.T) {
	if s, e := markersFor(TopologyLoopback); s != markerStart || e != markerEnd {
		t.Errorf("loopback markers %q %q", s, e)
	}
	if s, e := markersFor(TopologyNetns); s != markerNetnsStart || e != markerNetnsEnd {
		t.Errorf("netns markers %q %q", s, e)
	}
	cfg := &Config{Reps: 1, CommandLine: "go run ./integration/cmd/tunnel-bench"}
	lo := &topology{name: TopologyLoopback, mtu: 65536, client: localHost("client"), server: localHost("server"), gateway: localHost("gateway")}
	r := buildReport(cfg, lo, sysInfo{}, []Path{directPath{}}, newResults())
	if !strings.HasPrefix(r, "## Data path: direct (") || !strings.Contains(r, "Topology: **loopback**") || !strings.Contains(r, "MTU 65536") {
		t.Errorf("loopback header:\n%s", r)
	}
	nt := &topology{name: TopologyNetns, mtu: 1500,
		gateway: &host{ip: "10.99.0.1"}, server: &host{ip: "10.99.0.2"}, client: &host{ip: "10.99.0.3"}}
	r = buildReport(cfg, nt, sysInfo{}, []Path{directPath{}}, newResults())
	for _, want := range []string{"## Data path between network namespaces, veth MTU 1500: direct (",
		"Topology: **netns**", "MTU 1500", "MSS is 1448 bytes", "Server side 10.99.0.2", "Client side 10.99.0.3", "Gateway 10.99.0.1"} {
		if !strings.Contains(r, want) {
			t.Errorf("netns header lacks %q:\n%s", want, r)
		}
	}
	// The tunnel's paths are named for the way they go, and what crossed
	// the gateway's link is reported.
	paths := []Path{directPath{}, &tunnelPath{name: PathTunnel}, &tunnelPath{name: PathTunnelRelayed}, &tunnelPath{name: PathTunnelTCP}}
	nt.traffic = &linkTraffic{gwRx: 40e3, gwTx: 60e3, cliRx: 5e6, cliTx: 900e6}
	r = buildReport(cfg, nt, sysInfo{}, paths, newResults())
	for _, want := range []string{"0.0 MB in, 0.1 MB out", "| tunnel direct (app agent → db agent) |",
		"| tunnel relayed (app agent → gateway → db agent) |", "| tunnel over TCP (relayed, QUIC in TLS over TCP) |",
		"### Aims: the direct path against stunnel", "### Aims: the relayed path against stunnel"} {
		if !strings.Contains(r, want) {
			t.Errorf("report lacks %q:\n%s", want, r)
		}
	}
	if err := nt.checkAddr("10.99.0.2:5432"); err != nil {
		t.Errorf("LAN address refused: %v", err)
	}
	if err := nt.checkAddr("192.0.2.1:5432"); err == nil {
		t.Errorf("an address off the LAN accepted")
	}
	if err := lo.checkAddr("10.99.0.2:5432"); err == nil {
		t.Errorf("loopback topology accepted a LAN address")
	}
}

// TestNetnsTopologyCleanup sets up the netns topology the way Run does and
// checks that the harness's cleanup (what runs at the end, after an error
// and after SIGINT) deletes every namespace, and that the hosts reach each
// other over links of the configured MTU. Needs root: skipped without it,
// failed under CI=1.
func TestNetnsTopologyCleanup(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "network namespaces need root (CAP_NET_ADMIN); run as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &env{tmp: t.TempDir(), log: io.Discard}
	defer e.cleanup()
	topo, err := newTopology(ctx, e, &Config{Topology: TopologyNetns, MTU: 1500})
	if errors.Is(err, netns.ErrNotPermitted) || errors.Is(err, netns.ErrNoIP) {
		testenv.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if topo.mtu != 1500 || topo.server.ns == nil || topo.client.ns == nil || topo.gateway.ns == nil {
		t.Fatalf("topology %+v", topo)
	}
	// The echo server on the server side, reached from the client side.
	echo, err := startEcho(e, topo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := firstByte(ctx, topo.client, topo.server.addr(echo.Port())); err != nil {
		t.Fatalf("client → server: %v", err)
	}
	// Not from the harness's own namespace: the server side is elsewhere.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if _, err := firstByte(short, localHost("here"), topo.server.addr(echo.Port())); err == nil {
		t.Fatalf("reached the server side's echo server from the harness's own namespace")
	}
	names := topo.lan.Namespaces()
	e.cleanup()
	for _, n := range names {
		if n.Exists() {
			t.Errorf("namespace %s survived the cleanup", n.Name)
		}
	}
}
