package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func testSources() Sources {
	return Sources{
		Version: "1.2.3",
		Streams: func() []StreamCount {
			return []StreamCount{{Path: "relayed", Active: 2, Total: 7}, {Path: "direct", Active: 1, Total: 3}}
		},
		Bytes:    func() (uint64, uint64) { return 100, 2000 },
		Sessions: func() int { return 1 },
		Connections: func() []ConnCount {
			return []ConnCount{{"agent", "udp", 3}, {"agent", "tcp", 1}, {"user", "udp", 2}, {"user", "tcp", 0}}
		},
		AgentsConnected:    func() int { return 4 },
		AuditQueue:         func() int { return 9 },
		Panics:             func() int64 { return 1 },
		TLSHandshakeErrors: func() int64 { return 6 },
		Limiters: func() []LimiterCount {
			return []LimiterCount{{Listener: "tcp", Active: 5, RefusedPerSource: 2, RefusedTotal: 1}, {Listener: "quic", Active: 6}}
		},
	}
}

// TestGatewayRegistry: the sources appear under their names, with the
// values read at the scrape.
func TestGatewayRegistry(t *testing.T) {
	st := Wrap(openSQLite(t), Prefix)
	st.peerRefusals.Add(4)
	g := NewGateway(st, testSources())
	g.RevokeToDead.Observe(0.02)
	want := `
# HELP tunnel_gateway_streams_active Streams open now, by path: relayed (through this gateway), direct (between two agents, brokered by this gateway), tcp (relayed for a caller connected with QUIC over TCP).
# TYPE tunnel_gateway_streams_active gauge
tunnel_gateway_streams_active{path="direct"} 1
tunnel_gateway_streams_active{path="relayed"} 2
# HELP tunnel_gateway_streams_total Streams opened since the gateway started, by path (relayed, direct, tcp).
# TYPE tunnel_gateway_streams_total counter
tunnel_gateway_streams_total{path="direct"} 3
tunnel_gateway_streams_total{path="relayed"} 7
# HELP tunnel_gateway_relayed_bytes_total Bytes relayed, by direction: in (from the caller to the target), out (back); open streams included.
# TYPE tunnel_gateway_relayed_bytes_total counter
tunnel_gateway_relayed_bytes_total{direction="in"} 100
tunnel_gateway_relayed_bytes_total{direction="out"} 2000
# HELP tunnel_gateway_agents_connected Agents connected to this gateway now.
# TYPE tunnel_gateway_agents_connected gauge
tunnel_gateway_agents_connected 4
# HELP tunnel_gateway_audit_queue_length Audit events waiting to be written by the audit writer (group commit); a queue that stays long means the store is slow.
# TYPE tunnel_gateway_audit_queue_length gauge
tunnel_gateway_audit_queue_length 9
# HELP tunnel_gateway_handshake_failures_total Connections that failed before being authenticated, by reason: certificate (a QUIC peer whose certificate was refused: unknown, expired, revoked or locked), connection_limit (refused by a connection cap before the handshake), tls (a TLS handshake on the API port that failed or timed out).
# TYPE tunnel_gateway_handshake_failures_total counter
tunnel_gateway_handshake_failures_total{reason="certificate"} 4
tunnel_gateway_handshake_failures_total{reason="connection_limit"} 3
tunnel_gateway_handshake_failures_total{reason="tls"} 6
# HELP tunnel_gateway_revocation_close_seconds Seconds from access being ended on this gateway (a lock, a certificate or session revoked, a session expired) to each stream it cut being closed.
# TYPE tunnel_gateway_revocation_close_seconds histogram
tunnel_gateway_revocation_close_seconds_bucket{le="0.001"} 0
tunnel_gateway_revocation_close_seconds_bucket{le="0.005"} 0
tunnel_gateway_revocation_close_seconds_bucket{le="0.01"} 0
tunnel_gateway_revocation_close_seconds_bucket{le="0.025"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="0.05"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="0.1"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="0.25"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="0.5"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="0.75"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="1"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="2.5"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="5"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="10"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="30"} 1
tunnel_gateway_revocation_close_seconds_bucket{le="+Inf"} 1
tunnel_gateway_revocation_close_seconds_sum 0.02
tunnel_gateway_revocation_close_seconds_count 1
`
	names := []string{"tunnel_gateway_streams_active", "tunnel_gateway_streams_total", "tunnel_gateway_relayed_bytes_total",
		"tunnel_gateway_agents_connected", "tunnel_gateway_audit_queue_length", "tunnel_gateway_handshake_failures_total",
		"tunnel_gateway_revocation_close_seconds"}
	if err := testutil.GatherAndCompare(g.Registry, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// The runtime and process collectors are there.
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "tunnel_gateway_build_info", "tunnel_gateway_panics_recovered_total",
		"tunnel_gateway_connections", "tunnel_gateway_sessions_active", "tunnel_gateway_listener_connections", "tunnel_gateway_connections_refused_total",
		"tunnel_gateway_certificates_revoked_total"} {
		if n, err := testutil.GatherAndCount(g.Registry, name); err != nil || n == 0 {
			t.Errorf("%s: %d samples, %v; want it exported", name, n, err)
		}
	}
}

// TestNamingAndLabels: the metrics follow Prometheus's conventions
// (promlint), and no label is one that could carry a name or an id.
func TestNamingAndLabels(t *testing.T) {
	st := Wrap(openSQLite(t), Prefix)
	// Touch the vectors so that every family has a sample to lint.
	st.logins.WithLabelValues("success").Inc()
	st.certs.WithLabelValues("x509", "user").Inc()
	st.sessions.WithLabelValues("success").Inc()
	st.revocations.WithLabelValues("session").Inc()
	st.auditEvents.WithLabelValues("login.success", "success").Inc()
	st.errs.WithLabelValues("get_user", "not_found").Inc()
	st.duration.WithLabelValues("get_user").Observe(0.001)
	g := NewGateway(st, testSources())
	mfs, err := g.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	allowed := map[string]bool{"path": true, "direction": true, "kind": true, "transport": true, "listener": true, "reason": true,
		"outcome": true, "subject": true, "type": true, "operation": true, "version": true, "le": true}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "go_") || strings.HasPrefix(mf.GetName(), "process_") {
			continue
		}
		if !strings.HasPrefix(mf.GetName(), Prefix) {
			t.Errorf("%s: want the prefix %s", mf.GetName(), Prefix)
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("%s has label %q: not one of the bounded labels", mf.GetName(), l.GetName())
				}
			}
		}
	}
}
