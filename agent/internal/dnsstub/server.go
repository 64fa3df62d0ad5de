// Package dnsstub is the agent's DNS stub: a tiny DNS server on a loopback
// address of the app's machine that gives each of the agent's listeners a
// name, so that an app keeps a host name in its configuration instead of
// an address.
//
// The stub answers NAME.CLUSTER.tunnel. (in any letter case) with the
// address of the agent's listener NAME: an A record for an IPv4 address,
// AAAA for IPv6, and NODATA with the zone's SOA for the other type. An
// unknown NAME inside CLUSTER.tunnel. is NXDOMAIN with the SOA. Every other
// name is REFUSED, unless an upstream resolver is configured (off by
// default): then it is forwarded there, with a timeout, and SERVFAIL is the
// answer when the upstream fails. Records live TTL (5) seconds.
//
// It serves UDP and TCP on the same address, truncates UDP answers to the
// client's buffer size (512 bytes, or its EDNS0 size) with the TC bit so
// that the client retries over TCP, limits the queries of each source
// address, closes silent TCP connections after a timeout and the oldest
// one when too many are open, and contains a panic to the query that
// caused it (pkg/panics). Close stops everything and waits for every
// goroutine; it is safe to call twice.
//
// docs/DNS-STUB.md tells operators how to point a machine's resolver at
// the stub for the tunnel domain only.
package dnsstub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Server is a running stub. Make one with Start.
type Server struct {
	cfg     Config
	zone    string // "cluster.tunnel."
	log     *slog.Logger
	names   atomic.Pointer[map[string]netip.Addr]
	limit   *limiter
	forward chan struct{} // semaphore of forwarded queries in flight

	ctx    context.Context // canceled by Close: ends forwarded queries
	cancel context.CancelFunc

	udp, tcp       *dns.Server
	udpAddr        net.Addr
	tcpAddr        net.Addr
	wg             sync.WaitGroup
	closeOnce      sync.Once
	closeErr       error
	stats          counters
	tcpEvicted     atomic.Int64
	upstreamClient *dns.Client
}

// Stats counts what the stub did since it started.
type Stats struct {
	Answered    int64 // answers from the cluster's zone (records, NODATA, NXDOMAIN)
	Refused     int64 // names outside the zone with no upstream
	Forwarded   int64 // queries answered by the upstream
	Failed      int64 // SERVFAIL: the upstream failed or too many were in flight
	RateLimited int64 // queries dropped by the per-source limit
	TCPEvicted  int64 // TCP connections closed to make room for a new one
}

type counters struct {
	answered, refused, forwarded, failed, rateLimited atomic.Int64
}

// Start validates cfg, binds UDP and TCP on cfg.Listen and serves until
// Close. A validation error is one sentence naming the YAML key.
func Start(cfg Config) (*Server, error) {
	cfg, listen, zone, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	pc, ln, err := bind(listen)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		zone:    zone,
		log:     cfg.Log.With("component", "dns-stub"),
		limit:   newLimiter(cfg.RatePerSecond, cfg.Burst, cfg.Now),
		forward: make(chan struct{}, cfg.MaxForwards),
		udpAddr: pc.LocalAddr(),
		tcpAddr: ln.Addr(),
	}
	s.names.Store(&cfg.Names)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.Upstream != "" {
		s.upstreamClient = &dns.Client{Net: "udp", Timeout: cfg.UpstreamTimeout, UDPSize: dns.DefaultMsgSize}
	}
	tcpTimeout := cfg.TCPTimeout
	s.udp = &dns.Server{PacketConn: pc, Handler: s, UDPSize: dns.DefaultMsgSize, MsgAcceptFunc: accept}
	s.tcp = &dns.Server{
		Listener:      &connLimiter{Listener: ln, max: cfg.MaxTCPConns, evicted: &s.tcpEvicted},
		Handler:       s,
		ReadTimeout:   tcpTimeout,
		WriteTimeout:  tcpTimeout,
		IdleTimeout:   func() time.Duration { return tcpTimeout },
		MaxTCPQueries: 1000,
		MsgAcceptFunc: accept,
	}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := srv.ActivateAndServe()
			if err != nil && s.ctx.Err() == nil {
				s.log.Error("the DNS stub stopped serving; restart the agent", "err", err)
			}
			failed <- err
		}()
		select {
		case <-started:
		case err := <-failed:
			_ = s.Close()
			return nil, fmt.Errorf("dns.listen %s: the DNS stub could not start: %w", hostPort(listen), err)
		}
	}
	s.log.Info("DNS stub answering", "udp", s.udpAddr.String(), "tcp", s.tcpAddr.String(), "zone", zone,
		"names", len(cfg.Names), "upstream", cfg.Upstream)
	return s, nil
}

// bind listens on UDP and TCP on the same address; with port 0 both get the
// same free port.
func bind(listen netip.AddrPort) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
		if err != nil {
			return nil, nil, bindErr(listen, err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(listen.Addr(), uint16(port))))
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = err
		if listen.Port() != 0 {
			break // a fixed port: TCP's is taken, trying again changes nothing
		}
	}
	return nil, nil, bindErr(listen, lastErr)
}

func bindErr(listen netip.AddrPort, err error) error {
	return fmt.Errorf("dns.listen %s: cannot listen there (%w): free the address or choose another loopback address such as %s", hostPort(listen), err, Suggested)
}

// Addr returns the UDP and TCP addresses the stub answers on.
func (s *Server) Addr() (udp, tcp net.Addr) { return s.udpAddr, s.tcpAddr }

// Zone returns the zone the stub answers for, "cluster.tunnel.".
func (s *Server) Zone() string { return s.zone }

// SetNames replaces the listener names (for a changed configuration).
func (s *Server) SetNames(names map[string]netip.Addr) error {
	n, err := CheckNames(names)
	if err != nil {
		return err
	}
	s.names.Store(&n)
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Answered:    s.stats.answered.Load(),
		Refused:     s.stats.refused.Load(),
		Forwarded:   s.stats.forwarded.Load(),
		Failed:      s.stats.failed.Load(),
		RateLimited: s.stats.rateLimited.Load(),
		TCPEvicted:  s.tcpEvicted.Load(),
	}
}

// Close stops serving, ends forwarded queries and waits for every goroutine
// (the servers wait for their per-query goroutines). It is safe to call
// more than once and from several goroutines; every call returns the first
// call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		var errs []error
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if err := srv.Shutdown(); err != nil && !notStarted(err) {
				errs = append(errs, err)
			}
			// A server that never started still owns its socket.
			if srv.PacketConn != nil {
				_ = srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				_ = srv.Listener.Close()
			}
		}
		s.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("closing the DNS stub: %w", err)
		}
	})
	return s.closeErr
}

// notStarted reports miekg/dns's error for a Shutdown before the server ran
// (Start failed half-way).
func notStarted(err error) bool { return err != nil && err.Error() == "dns: server not started" }
