package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Prefix starts every name of the gateway's own metrics.
const Prefix = "tunnel_gateway_"

// StreamCount is one path's streams: relayed (through this gateway),
// direct (between two agents, brokered by this gateway), or tcp (relayed
// for a caller connected with QUIC over TCP).
type StreamCount struct {
	Path   string
	Active int
	Total  uint64
}

// ConnCount is the authenticated QUIC connections of one kind of peer
// (agent, user) over one transport (udp, or tcp: QUIC over TCP).
type ConnCount struct {
	Kind, Transport string
	Count           int
}

// LimiterCount is what one connection limiter (pkg/netguard) did: the
// listener it guards, the slots in use, and the connections it refused.
type LimiterCount struct {
	Listener                       string
	Active                         int
	RefusedPerSource, RefusedTotal int64
}

// Sources are read at each scrape; a nil func leaves its metrics out.
type Sources struct {
	// Streams are the streams by path.
	Streams func() []StreamCount
	// Bytes are the bytes relayed so far, from callers to targets (in) and
	// back (out), streams still open included.
	Bytes func() (in, out uint64)
	// Sessions is the bastion sessions with a stream through this gateway
	// now.
	Sessions func() int
	// Connections are the authenticated QUIC connections.
	Connections func() []ConnCount
	// AgentsConnected is the agents connected to this gateway.
	AgentsConnected func() int
	// AuditQueue is the events waiting for the audit writer.
	AuditQueue func() int
	// Panics is the panics recovered (pkg/panics.Count).
	Panics func() int64
	// Limiters are the connection limiters of the listeners.
	Limiters func() []LimiterCount
	// TLSHandshakeErrors is the TLS handshakes of the API port that
	// failed (scanners, clients that do not trust the certificate, silent
	// clients cut by the deadline).
	TLSHandshakeErrors func() int64
	// Version is this build's version, for build_info.
	Version string
}

// Gateway is the gateway's registry and the instruments fed by events.
type Gateway struct {
	Registry *prometheus.Registry
	// RevokeToDead is observed once per stream cut by a revocation, with
	// the seconds from the revocation being applied on this gateway to the
	// stream being closed.
	RevokeToDead prometheus.Histogram
}

// revokeBuckets: a stream cut at once ends in milliseconds; an SSH
// session's stream gets a grace of half a second for its message; past
// ten seconds something is wrong.
var revokeBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, .75, 1, 2.5, 5, 10, 30}

// NewGateway returns the gateway's registry: the Go runtime and process
// collectors, st's metrics, and those of src.
func NewGateway(st *Store, src Sources) *Gateway {
	reg := prometheus.NewRegistry()
	g := &Gateway{Registry: reg, RevokeToDead: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    Prefix + "revocation_close_seconds",
		Help:    "Seconds from access being ended on this gateway (a lock, a certificate or session revoked, a session expired) to each stream it cut being closed.",
		Buckets: revokeBuckets,
	})}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), g.RevokeToDead)
	if st != nil {
		reg.MustRegister(st)
	}
	reg.MustRegister(gaugeFunc(Prefix+"build_info", "Always 1; its version label is the gateway's version.",
		prometheus.GaugeValue, []string{"version"}, func(emit emitFunc) { emit(1, src.Version) }))
	if src.Streams != nil {
		reg.MustRegister(gaugeFunc(Prefix+"streams_active", "Streams open now, by path: relayed (through this gateway), direct (between two agents, brokered by this gateway), tcp (relayed for a caller connected with QUIC over TCP).",
			prometheus.GaugeValue, []string{"path"}, func(emit emitFunc) {
				for _, s := range src.Streams() {
					emit(float64(s.Active), s.Path)
				}
			}))
		reg.MustRegister(gaugeFunc(Prefix+"streams_total", "Streams opened since the gateway started, by path (relayed, direct, tcp).",
			prometheus.CounterValue, []string{"path"}, func(emit emitFunc) {
				for _, s := range src.Streams() {
					emit(float64(s.Total), s.Path)
				}
			}))
	}
	if src.Bytes != nil {
		reg.MustRegister(gaugeFunc(Prefix+"relayed_bytes_total", "Bytes relayed, by direction: in (from the caller to the target), out (back); open streams included.",
			prometheus.CounterValue, []string{"direction"}, func(emit emitFunc) {
				in, out := src.Bytes()
				emit(float64(in), "in")
				emit(float64(out), "out")
			}))
	}
	if src.Sessions != nil {
		reg.MustRegister(gaugeFunc(Prefix+"sessions_active", "Bastion sessions with a stream through this gateway now.",
			prometheus.GaugeValue, nil, func(emit emitFunc) { emit(float64(src.Sessions())) }))
	}
	if src.Connections != nil {
		reg.MustRegister(gaugeFunc(Prefix+"connections", "Authenticated QUIC connections now, by kind of peer (agent, user) and transport (udp, or tcp: QUIC carried over TCP where UDP is blocked).",
			prometheus.GaugeValue, []string{"kind", "transport"}, func(emit emitFunc) {
				for _, c := range src.Connections() {
					emit(float64(c.Count), c.Kind, c.Transport)
				}
			}))
	}
	if src.AgentsConnected != nil {
		reg.MustRegister(gaugeFunc(Prefix+"agents_connected", "Agents connected to this gateway now.",
			prometheus.GaugeValue, nil, func(emit emitFunc) { emit(float64(src.AgentsConnected())) }))
	}
	if src.AuditQueue != nil {
		reg.MustRegister(gaugeFunc(Prefix+"audit_queue_length", "Audit events waiting to be written by the audit writer (group commit); a queue that stays long means the store is slow.",
			prometheus.GaugeValue, nil, func(emit emitFunc) { emit(float64(src.AuditQueue())) }))
	}
	if src.Panics != nil {
		reg.MustRegister(gaugeFunc(Prefix+"panics_recovered_total", "Panics recovered at the boundary of one connection, stream or request (that one was closed, the process went on): each is a bug to report.",
			prometheus.CounterValue, nil, func(emit emitFunc) { emit(float64(src.Panics())) }))
	}
	if src.Limiters != nil {
		reg.MustRegister(gaugeFunc(Prefix+"listener_connections", "Connections holding a slot of a listener's limiter now, by listener (tcp: API and jump host; quic; quic_unauthenticated).",
			prometheus.GaugeValue, []string{"listener"}, func(emit emitFunc) {
				for _, l := range src.Limiters() {
					emit(float64(l.Active), l.Listener)
				}
			}))
		reg.MustRegister(gaugeFunc(Prefix+"connections_refused_total", "Connections refused by a listener's limiter before any handshake, by listener and reason (per_source: the source's cap; total: the listener's cap).",
			prometheus.CounterValue, []string{"listener", "reason"}, func(emit emitFunc) {
				for _, l := range src.Limiters() {
					emit(float64(l.RefusedPerSource), l.Listener, "per_source")
					emit(float64(l.RefusedTotal), l.Listener, "total")
				}
			}))
	}
	reg.MustRegister(gaugeFunc(Prefix+"handshake_failures_total", "Connections that failed before being authenticated, by reason: certificate (a QUIC peer whose certificate was refused: unknown, expired, revoked or locked), connection_limit (refused by a connection cap before the handshake), tls (a TLS handshake on the API port that failed or timed out).",
		prometheus.CounterValue, []string{"reason"}, func(emit emitFunc) {
			if st != nil {
				emit(st.PeerRefusals(), "certificate")
			}
			if src.TLSHandshakeErrors != nil {
				emit(float64(src.TLSHandshakeErrors()), "tls")
			}
			if src.Limiters != nil {
				var n int64
				for _, l := range src.Limiters() {
					n += l.RefusedPerSource + l.RefusedTotal
				}
				emit(float64(n), "connection_limit")
			}
		}))
	return g
}

// emitFunc emits one sample with its label values.
type emitFunc func(v float64, labels ...string)

// funcCollector reads its samples at each scrape.
type funcCollector struct {
	desc    *prometheus.Desc
	typ     prometheus.ValueType
	collect func(emitFunc)
}

// gaugeFunc returns a collector of one metric (a gauge or a counter,
// by typ) whose samples collect emits at each scrape.
func gaugeFunc(name, help string, typ prometheus.ValueType, labels []string, collect func(emitFunc)) prometheus.Collector {
	return &funcCollector{desc: prometheus.NewDesc(name, help, labels, nil), typ: typ, collect: collect}
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func(v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.desc, c.typ, v, labels...)
	})
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
