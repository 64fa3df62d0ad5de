// Package metricsserver serves a component's Prometheus metrics and health
// checks on an address of their own (--metrics-addr):
//
//	/metrics  the registry given, in the Prometheus text format
//	/healthz  200 while the process serves requests at all (liveness)
//	/readyz   200 when Config.Ready says so, else 503 with one sentence
//	          saying what is not ready (readiness)
//
// The address is meant for a scraper and a load balancer's or an
// orchestrator's probes, but it is treated as hostile all the same: the
// connections are capped in total and per source (pkg/netguard), request
// headers must arrive within HeaderTimeout, responses are bounded in time,
// at most a few scrapes run at once, and /readyz answers from a result at
// most ReadyCache old, so that a flood of probes costs the store at most
// one check per ReadyCache. Nothing served here is secret: the metrics
// carry no user, session or agent name.
//
//	srv, err := metricsserver.Listen(metricsserver.Config{Addr: ":9090", Registry: reg, Ready: ready})
//	...
//	defer srv.Close()
package metricsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/panics"
)

// Defaults of Config.
const (
	DefaultMaxConns          = 64
	DefaultMaxConnsPerSource = 16
	DefaultHeaderTimeout     = 5 * time.Second
	DefaultReadyCache        = time.Second
	DefaultReadyTimeout      = 3 * time.Second
)

// Config says what to serve where. The zero value of every field but Addr
// and Registry means its default.
type Config struct {
	// Addr is the TCP address to listen on (host:port).
	Addr string
	// Registry is what /metrics serves.
	Registry prometheus.Gatherer
	// Ready reports whether the component is ready to serve: nil when it
	// is, else an error whose message is one sentence for an operator (it
	// is shown on /readyz: no secret in it). Nil Ready means always ready.
	// It gets a context bounded by ReadyTimeout.
	Ready func(ctx context.Context) error
	// ReadyCache is how long a readiness result is reused; zero means
	// DefaultReadyCache.
	ReadyCache time.Duration
	// ReadyTimeout bounds one readiness check; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// MaxConns and MaxConnsPerSource cap the concurrent connections in all
	// and per source address; zero means the defaults.
	MaxConns, MaxConnsPerSource int
	// HeaderTimeout closes a connection whose request headers do not
	// arrive in time (a silent client); zero means DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	Log           *slog.Logger
	// Clock is for the readiness cache; nil means time.Now.
	Clock func() time.Time
}

// Server is a running metrics listener. Close stops it; Close is safe to
// call twice.
type Server struct {
	cfg    Config
	ln     net.Listener
	lim    *netguard.Limiter
	errLog *netguard.ErrorLog
	http   *http.Server
	wg     sync.WaitGroup

	readyMu   sync.Mutex // serialises checks; guards the two below
	readyAt   time.Time
	readyErr  error
	closeOnce sync.Once
	closeErr  error
}

// Listen binds cfg.Addr and serves on it until Close.
func Listen(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("metrics: no registry")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerSource <= 0 {
		cfg.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.ReadyCache <= 0 {
		cfg.ReadyCache = DefaultReadyCache
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg}
	s.lim = netguard.NewLimiter("metrics", netguard.Limits{PerSource: cfg.MaxConnsPerSource, Total: cfg.MaxConns}, cfg.Log)
	s.errLog = netguard.NewErrorLog(cfg.Log)
	s.ln = netguard.NewListener(ln, s.lim, "metrics")
	s.http = &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		ReadTimeout:       2 * cfg.HeaderTimeout,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          s.errLog.Logger(),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Log.Error("metrics listener stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the listener and closes every connection. Safe to call
// twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			s.closeErr = s.http.Close()
		}
		s.wg.Wait()
		s.lim.Close()
		s.errLog.Close()
	})
	return s.closeErr
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{
		MaxRequestsInFlight: 4,
		Timeout:             20 * time.Second,
		ErrorHandling:       promhttp.ContinueOnError,
		ErrorLog:            errorLogger{s.cfg.Log},
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := s.ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return recoverPanics(s.cfg.Log, mux)
}

// ready runs Ready, or reuses a result at most ReadyCache old; concurrent
// probes wait for one check.
func (s *Server) ready(ctx context.Context) error {
	if s.cfg.Ready == nil {
		return nil
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	now := s.cfg.Clock()
	if !s.readyAt.IsZero() && now.Sub(s.readyAt) < s.cfg.ReadyCache && now.After(s.readyAt.Add(-time.Second)) {
		return s.readyErr
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ReadyTimeout)
	defer cancel()
	s.readyErr = s.cfg.Ready(cctx)
	s.readyAt = s.cfg.Clock()
	return s.readyErr
}

// recoverPanics turns a panic in a handler into a 500 for that request,
// logged and counted by pkg/panics.
func recoverPanics(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			panics.Report(log, "metrics request "+r.Method+" "+r.URL.Path, v, debug.Stack())
			http.Error(w, "internal error", http.StatusInternalServerError)
		}()
		h.ServeHTTP(w, r)
	})
}

// errorLogger gives promhttp's errors (a collector that failed) to slog.
type errorLogger struct{ log *slog.Logger }

func (e errorLogger) Println(v ...any) { e.log.Warn("metrics: " + fmt.Sprint(v...)) }
