package agent

// The agent's metrics and health (tunnel-agent run --metrics-addr): its
// own Prometheus registry with the Go runtime and process collectors, the
// gateway connections read from the links at each scrape, and counters
// fed by the connect loop and the streams through nil-safe hooks (a nil
// *Metrics counts nothing). /readyz is ready while the agent is connected
// to at least one gateway. docs/METRICS.md lists every metric.

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tunnelhq/tunnel/pkg/metricsserver"
)

// MetricsPrefix starts every name of the agent's own metrics.
const MetricsPrefix = "tunnel_agent_"

// Paths of the agent's streams, as the metrics name them.
const (
	PathRelayed = "relayed" // through a gateway, QUIC over UDP
	PathTCP     = "tcp"     // through a gateway, QUIC carried over TCP
	PathDirect  = "direct"  // to another agent, off the relay
)

// Metrics is the agent's registry and instruments. Create it with
// NewMetrics, give it to the agent (Config.Metrics), and serve it with
// Listen. Its methods are safe on a nil *Metrics (they do nothing).
type Metrics struct {
	reg   *prometheus.Registry
	agent atomic.Pointer[Agent]

	connects          *prometheus.CounterVec // path
	reconnects        prometheus.Counter
	handshakeFailures *prometheus.CounterVec // reason
	streamsActive     *prometheus.GaugeVec   // path
	streamsTotal      *prometheus.CounterVec // path
	bytes             *prometheus.CounterVec // direction
}

// NewMetrics returns the agent's metrics; version labels build_info.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricsPrefix + "gateway_connects_total",
			Help: "Connections to a gateway established (handshake and welcome done), by path: udp (QUIC) or tcp (QUIC carried over TCP).",
		}, []string{"path"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricsPrefix + "gateway_reconnects_total",
			Help: "Connections to a gateway established again after one to the same gateway was lost.",
		}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricsPrefix + "handshake_failures_total",
			Help: "Failed attempts to connect to a gateway, by reason: dns, no_answer, udp_blocked, tls (not the pinned cluster), refused (certificate refused), locked (agent locked by an administrator), other.",
		}, []string{"reason"}),
		streamsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricsPrefix + "streams_active",
			Help: "Streams to the agent's exposed services open now, by path: relayed (delivered by a gateway), direct (from another agent); tcp is reserved for streams delivered over QUIC carried over TCP.",
		}, []string{"path"}),
		streamsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricsPrefix + "streams_total",
			Help: "Streams to the agent's exposed services opened since the agent started, by path (relayed, direct, tcp).",
		}, []string{"path"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricsPrefix + "stream_bytes_total",
			Help: "Bytes carried by the streams to the agent's exposed services once they ended, by direction: sent (from the local service) or received.",
		}, []string{"direction"}),
	}
	for _, p := range []string{PathRelayed, PathTCP, PathDirect} {
		m.streamsActive.WithLabelValues(p)
		m.streamsTotal.WithLabelValues(p)
	}
	for _, p := range []string{"udp", "tcp"} {
		m.connects.WithLabelValues(p)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        MetricsPrefix + "build_info",
		Help:        "Always 1; its version label is the agent's version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.connects, m.reconnects, m.handshakeFailures, m.streamsActive, m.streamsTotal, m.bytes, linkCollector{m})
	return m
}

// Registry is what /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// attach makes m read the running agent a (Run calls it).
func (m *Metrics) attach(a *Agent) {
	if m != nil {
		m.agent.Store(a)
	}
}

// errNotConnected is what /readyz says while no gateway is connected.
var errNotConnected = errors.New("the agent is not connected to any gateway")

// Ready reports whether the agent is connected to at least one gateway.
func (m *Metrics) Ready(context.Context) error {
	a := m.agent.Load()
	if a == nil || len(a.connected()) == 0 {
		return errNotConnected
	}
	return nil
}

// Listen serves m, /healthz and /readyz on addr until the returned server
// is closed (pkg/metricsserver: capped connections, header deadline).
func (m *Metrics) Listen(addr string, log *slog.Logger) (*metricsserver.Server, error) {
	return metricsserver.Listen(metricsserver.Config{Addr: addr, Registry: m.reg, Ready: m.Ready, Log: log})
}

// gatewayConnected counts a connection established to a gateway, overTCP
// or not; again says the link had been connected before.
func (m *Metrics) gatewayConnected(overTCP, again bool) {
	if m == nil {
		return
	}
	path := "udp"
	if overTCP {
		path = "tcp"
	}
	m.connects.WithLabelValues(path).Inc()
	if again {
		m.reconnects.Inc()
	}
}

// handshakeFailed counts a failed attempt to connect.
func (m *Metrics) handshakeFailed(kind failKind) {
	if m == nil {
		return
	}
	m.handshakeFailures.WithLabelValues(failReason(kind)).Inc()
}

// failReason names a failKind for the metrics.
func failReason(kind failKind) string {
	switch kind {
	case failDNS:
		return "dns"
	case failNoAnswer:
		return "no_answer"
	case failUDPBlocked:
		return "udp_blocked"
	case failTLS:
		return "tls"
	case failRefused:
		return "refused"
	case failLocked:
		return "locked"
	}
	return "other"
}

// streamStarted counts a stream on path (PathRelayed, PathTCP,
// PathDirect); the returned func ends it with the bytes it sent and
// received (call it once).
func (m *Metrics) streamStarted(path string) func(sent, received int64) {
	if m == nil {
		return func(int64, int64) {}
	}
	switch path {
	case PathRelayed, PathTCP, PathDirect:
	default:
		path = PathRelayed
	}
	// A scrape reads each series at its own moment: the stream is active
	// before it is counted, and its bytes are counted before it stops
	// being active, so a reader that sees it counted and no longer active
	// sees its bytes too (when it reads them after the gauge).
	active := m.streamsActive.WithLabelValues(path)
	active.Inc()
	m.streamsTotal.WithLabelValues(path).Inc()
	var done atomic.Bool
	return func(sent, received int64) {
		if done.Swap(true) {
			return
		}
		m.bytes.WithLabelValues("sent").Add(float64(max(sent, 0)))
		m.bytes.WithLabelValues("received").Add(float64(max(received, 0)))
		active.Dec()
	}
}

// linkCollector reads the agent's gateway links at each scrape.
type linkCollector struct{ m *Metrics }

var (
	gatewayConnsDesc = prometheus.NewDesc(MetricsPrefix+"gateway_connections",
		"Gateways the agent is connected to now, by path: udp (QUIC) or tcp (QUIC carried over TCP).", []string{"path"}, nil)
	gatewaysDesc = prometheus.NewDesc(MetricsPrefix+"gateways",
		"Gateways the agent keeps a connection to (its --gateway list, or the SRV records of its zone).", nil, nil)
)

func (c linkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- gatewayConnsDesc
	ch <- gatewaysDesc
}

func (c linkCollector) Collect(ch chan<- prometheus.Metric) {
	var udp, tcp, links int
	if a := c.m.agent.Load(); a != nil {
		a.linksMu.Lock()
		ls := append([]*link(nil), a.links...)
		a.linksMu.Unlock()
		links = len(ls)
		for _, l := range ls {
			s := l.sess.Load()
			if s == nil || s.conn.Context().Err() != nil {
				continue
			}
			if s.tcp {
				tcp++
			} else {
				udp++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(gatewayConnsDesc, prometheus.GaugeValue, float64(udp), "udp")
	ch <- prometheus.MustNewConstMetric(gatewayConnsDesc, prometheus.GaugeValue, float64(tcp), "tcp")
	ch <- prometheus.MustNewConstMetric(gatewaysDesc, prometheus.GaugeValue, float64(links))
}
