package gateway

// The gateway's metrics and health endpoints (--metrics-addr): /metrics in
// the Prometheus format (gateway/internal/metrics lists what), /healthz
// (the process serves requests) and /readyz (the store answers and the
// gateway serves: not yet, or no longer, while it starts or shuts down).
// docs/METRICS.md is the operator's reference.

import (
	"context"
	"errors"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/metrics"
	"github.com/tunnelhq/tunnel/pkg/metricsserver"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Metrics builds the gateway's metrics registry (its own, with the Go
// runtime and process collectors) and connects the relay's revocation
// histogram to it. Each call builds a new one; ListenMetrics uses it.
func (g *Gateway) Metrics() *metrics.Gateway {
	st, _ := g.store.(*metrics.Store)
	var tlsErrors func() int64
	if c, ok := any(g.errLog).(tlsErrorCounter); ok {
		tlsErrors = c.TLSHandshakeErrors
	}
	m := metrics.NewGateway(st, metrics.Sources{
		TLSHandshakeErrors: tlsErrors,
		Version:            g.cfg.Version,
		Streams: func() []metrics.StreamCount {
			var out []metrics.StreamCount
			for _, s := range g.relay.StreamStats() {
				out = append(out, metrics.StreamCount{Path: s.Path, Active: s.Active, Total: s.Total})
			}
			return out
		},
		Bytes:    g.relay.BytesRelayed,
		Sessions: g.relay.ActiveSessions,
		Connections: func() []metrics.ConnCount {
			cs, _ := g.relay.ConnStats()
			out := make([]metrics.ConnCount, 0, len(cs))
			for _, c := range cs {
				out = append(out, metrics.ConnCount{Kind: c.Kind, Transport: c.Transport, Count: c.Count})
			}
			return out
		},
		AgentsConnected: func() int {
			_, n := g.relay.ConnStats()
			return n
		},
		AuditQueue: g.audit.QueueLen,
		Panics:     panics.Count,
		Limiters: func() []metrics.LimiterCount {
			all, pre := g.qgate.Stats()
			out := make([]metrics.LimiterCount, 0, 3)
			tcp := g.tcpLim.Stats()
			out = append(out,
				metrics.LimiterCount{Listener: "tcp", Active: tcp.Active, RefusedPerSource: tcp.RefusedPerSource, RefusedTotal: tcp.RefusedTotal},
				metrics.LimiterCount{Listener: "quic", Active: all.Active, RefusedPerSource: all.RefusedPerSource, RefusedTotal: all.RefusedTotal},
				metrics.LimiterCount{Listener: "quic_unauthenticated", Active: pre.Active, RefusedPerSource: pre.RefusedPerSource, RefusedTotal: pre.RefusedTotal})
			return out
		},
	})
	g.relay.ObserveRevocations(func(d time.Duration) { m.RevokeToDead.Observe(d.Seconds()) })
	return m
}

// tlsErrorCounter is what the API's error log (pkg/netguard.ErrorLog)
// offers once it counts the TLS handshakes that failed.
type tlsErrorCounter interface{ TLSHandshakeErrors() int64 }

// ListenMetrics serves the gateway's metrics, /healthz and /readyz on
// addr (host:port) until the returned server is closed; its listener has
// its own connection caps and header deadline (pkg/metricsserver). Call
// it after New; close it after Close.
func (g *Gateway) ListenMetrics(addr string) (*metricsserver.Server, error) {
	return metricsserver.Listen(metricsserver.Config{
		Addr:     addr,
		Registry: g.Metrics().Registry,
		Ready:    g.ready,
		Log:      g.cfg.Log.With("component", "metrics"),
	})
}

// errNotServing and errNoStore are what /readyz says.
var (
	errNotServing = errors.New("the gateway is not serving (it is starting or shutting down)")
	errNoStore    = errors.New("the gateway cannot reach its store")
)

// ready reports whether the gateway serves: its listeners are up (it was
// not closed) and its store answers a read.
func (g *Gateway) ready(ctx context.Context) error {
	if g.ctx == nil || g.ctx.Err() != nil {
		return errNotServing
	}
	if _, err := g.store.GetMeta(ctx, "cluster"); err != nil && !errors.Is(err, store.ErrNotFound) {
		g.cfg.Log.Warn("readiness: the store does not answer", "err", storeError(err))
		return errNoStore
	}
	return nil
}
