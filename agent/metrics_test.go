package agent

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsFollowTheLinks: the agent's gateway connections and its
// readiness follow its real connection to a (fake) gateway: not ready
// before it connects, one UDP connection and ready after, none and not
// ready once the gateway is gone.
func TestMetricsFollowTheLinks(t *testing.T) {
	ca := newCA(t, "prod")
	g := startFakeGateway(t, ca)
	a, _ := testAgent(t, ca, g.addr())
	m := NewMetrics("1.2.3")
	if err := m.Ready(t.Context()); err != errNotConnected {
		t.Errorf("Ready before the agent runs: %v; want %v", err, errNotConnected)
	}
	m.attach(a)
	runConnect(t, a)
	waitUntil(t, "the agent to connect", func() bool { return len(a.connected()) == 1 })
	if err := m.Ready(t.Context()); err != nil {
		t.Errorf("Ready while connected: %v; want nil", err)
	}
	want := `
# HELP tunnel_agent_gateway_connections Gateways the agent is connected to now, by path: udp (QUIC) or tcp (QUIC carried over TCP).
# TYPE tunnel_agent_gateway_connections gauge
tunnel_agent_gateway_connections{path="tcp"} 0
tunnel_agent_gateway_connections{path="udp"} 1
# HELP tunnel_agent_gateways Gateways the agent keeps a connection to (its --gateway list, or the SRV records of its zone).
# TYPE tunnel_agent_gateways gauge
tunnel_agent_gateways 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "tunnel_agent_gateway_connections", "tunnel_agent_gateways"); err != nil {
		t.Error(err)
	}
	g.goDown()
	waitUntil(t, "the agent to see the gateway gone", func() bool { return len(a.connected()) == 0 })
	if err := m.Ready(t.Context()); err != errNotConnected {
		t.Errorf("Ready with the gateway gone: %v; want %v", err, errNotConnected)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "go_goroutines", "process_open_fds", "tunnel_agent_build_info"); err != nil || n != 3 {
		t.Errorf("runtime, process and build_info metrics: %d, %v; want 3", n, err)
	}
}

// TestMetricsHooks: the hooks count by bounded labels, are safe on a nil
// *Metrics, and a stream's end counts once.
func TestMetricsHooks(t *testing.T) {
	var none *Metrics
	none.gatewayConnected(true, true)
	none.handshakeFailed(failLocked)
	none.streamStarted(PathDirect)(1, 2)
	none.attach(nil)

	m := NewMetrics("dev")
	m.gatewayConnected(false, false)
	m.gatewayConnected(true, true)
	m.handshakeFailed(failLocked)
	m.handshakeFailed(failKind(99))
	done := m.streamStarted(PathTCP)
	m.streamStarted("something-else")
	if got := testutil.ToFloat64(m.streamsActive.WithLabelValues(PathTCP)); got != 1 {
		t.Errorf("tcp streams active = %v; want 1", got)
	}
	done(100, 2000)
	done(100, 2000)
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"connects udp", testutil.ToFloat64(m.connects.WithLabelValues("udp")), 1},
		{"connects tcp", testutil.ToFloat64(m.connects.WithLabelValues("tcp")), 1},
		{"reconnects", testutil.ToFloat64(m.reconnects), 1},
		{"failures locked", testutil.ToFloat64(m.handshakeFailures.WithLabelValues("locked")), 1},
		{"failures other", testutil.ToFloat64(m.handshakeFailures.WithLabelValues("other")), 1},
		{"tcp streams active after the end", testutil.ToFloat64(m.streamsActive.WithLabelValues(PathTCP)), 0},
		{"tcp streams total", testutil.ToFloat64(m.streamsTotal.WithLabelValues(PathTCP)), 1},
		{"unknown path counted as relayed", testutil.ToFloat64(m.streamsTotal.WithLabelValues(PathRelayed)), 1},
		{"bytes sent", testutil.ToFloat64(m.bytes.WithLabelValues("sent")), 100},
		{"bytes received", testutil.ToFloat64(m.bytes.WithLabelValues("received")), 2000},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
}
