package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/panics"
)

// Defaults of a Server's zero fields.
const (
	DefaultTTL           = 30 * time.Second
	DefaultCacheFor      = time.Second
	DefaultMaxStale      = 2 * time.Minute
	DefaultSourceTimeout = 2 * time.Second
	// DefaultRateLimit and DefaultRateBurst: queries per second of one
	// source, far above what a resolver or an agent asks for its zone.
	DefaultRateLimit     = rate.Limit(50)
	DefaultRateBurst     = 100
	DefaultReadTimeout   = 2 * time.Second
	DefaultIdleTimeout   = 5 * time.Second
	DefaultWriteTimeout  = 2 * time.Second
	DefaultMaxTCPQueries = 100
	DefaultUDPWorkers    = 4
	DefaultMaxUDPSize    = ednsSize
	// DefaultTCPPerSource and DefaultTCPTotal cap concurrent TCP
	// connections (DNS over TCP is for the rare truncated answer).
	DefaultTCPPerSource = 16
	DefaultTCPTotal     = 512
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("dnsserver: server closed")

// Server answers for one zone. Set the fields, then call Serve once. A
// zero field means its default. The fields must not change after Serve.
type Server struct {
	// Zone is the cluster's zone ("prod.tunnel.example.com"); required.
	Zone string
	// Source gives the records; required.
	Source RecordSource
	// NameServers are the zone's NS names (fully qualified or relative
	// to Zone); empty means gw-ID.ZONE of every live gateway.
	NameServers []string

	// TTL of every record, and the SOA's negative TTL (DefaultTTL).
	TTL time.Duration
	// CacheFor is how long one answer of Source serves (DefaultCacheFor);
	// MaxStale how long the last good one serves while Source fails
	// (DefaultMaxStale); SourceTimeout bounds one call (DefaultSourceTimeout).
	CacheFor, MaxStale, SourceTimeout time.Duration

	// RateLimit and RateBurst make each source's token bucket: queries
	// over it are dropped (UDP) or REFUSED (TCP). rate.Inf turns it off.
	RateLimit rate.Limit
	RateBurst int
	// TCPLimits caps concurrent TCP connections per source and in total
	// (DefaultTCPPerSource, DefaultTCPTotal); a connection over a cap is
	// reset at once.
	TCPLimits netguard.Limits
	// ReadTimeout bounds reading one TCP message, the first included;
	// IdleTimeout the wait for the next one; WriteTimeout one reply.
	ReadTimeout, IdleTimeout, WriteTimeout time.Duration
	// MaxTCPQueries closes a TCP connection after that many queries.
	MaxTCPQueries int
	// UDPWorkers is the number of goroutines reading the UDP socket.
	UDPWorkers int
	// MaxUDPSize caps the UDP answer size a client's EDNS0 may ask for
	// (DefaultMaxUDPSize); without EDNS0 it is 512.
	MaxUDPSize int

	// Log receives the server's events; nil means slog.Default.
	Log *slog.Logger
	// Clock is the time for the cache and the rate limits; nil means
	// time.Now. Socket deadlines use the real clock.
	Clock func() time.Time

	mu       sync.Mutex // guards the fields below
	state    serverState
	udp      net.PacketConn
	tcp      net.Listener
	conns    map[net.Conn]struct{}
	cancel   context.CancelFunc
	finished chan struct{} // closed when Serve's goroutines are all done

	apex    string
	cache   *cache
	limiter *sourceLimiter
	tcpLim  *netguard.Limiter
	stats   counters

	wg sync.WaitGroup // Serve's goroutines: UDP workers, accept loop, connections

	limitedMu   sync.Mutex
	limitedLast time.Time
	limitedN    int64
}

// serverState is where a Server is in its life:
//
//	new ──Serve──▶ serving ──Shutdown/Close/listener error──▶ closed
//	new ──Shutdown/Close──▶ closed (a later Serve returns ErrServerClosed)
type serverState int

const (
	stateNew serverState = iota
	stateServing
	stateClosed
)

// Stats counts what a Server did.
type Stats struct {
	Queries     int64 // queries answered (any rcode)
	RateLimited int64 // queries dropped or refused over the per-source rate
	Malformed   int64 // queries that did not parse (FORMERR or no reply)
	Truncated   int64 // UDP answers sent with TC
	Refused     int64 // REFUSED answers (outside the zone, ANY/AXFR/IXFR...)
	NXDomain    int64
	ServFail    int64
	TCPConns    int // TCP connections open now
}

type counters struct {
	queries, rateLimited, malformed, truncated, refused, nxdomain, servfail atomic.Int64
}

func (c *counters) rcode(rc int) {
	c.queries.Add(1)
	switch rc {
	case dns.RcodeRefused:
		c.refused.Add(1)
	case dns.RcodeNameError:
		c.nxdomain.Add(1)
	case dns.RcodeServerFailure:
		c.servfail.Add(1)
	}
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := Stats{Queries: s.stats.queries.Load(), RateLimited: s.stats.rateLimited.Load(),
		Malformed: s.stats.malformed.Load(), Truncated: s.stats.truncated.Load(),
		Refused: s.stats.refused.Load(), NXDomain: s.stats.nxdomain.Load(), ServFail: s.stats.servfail.Load()}
	s.mu.Lock()
	st.TCPConns = len(s.conns)
	s.mu.Unlock()
	return st
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

func (s *Server) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock()
}

func (s *Server) maxUDPSize() int {
	if s.MaxUDPSize > 0 {
		return max(s.MaxUDPSize, dns.MinMsgSize)
	}
	return DefaultMaxUDPSize
}

func orDefault[T ~int | ~int64 | ~float64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// init checks the configuration and makes the server's parts.
func (s *Server) init() error {
	zone := strings.ToLower(strings.TrimSpace(s.Zone))
	if zone == "" || zone == "." {
		return errors.New("dnsserver: no zone: give the cluster's DNS zone (--dns-zone)")
	}
	if _, ok := dns.IsDomainName(zone); !ok {
		return fmt.Errorf("dnsserver: %q is not a DNS name: give the zone as labels joined by dots (--dns-zone)", s.Zone)
	}
	if s.Source == nil {
		return errors.New("dnsserver: no record source")
	}
	s.apex = dns.Fqdn(zone)
	ttl := orDefault(s.TTL, DefaultTTL)
	var ns []string
	for _, n := range s.NameServers {
		n = strings.ToLower(strings.TrimSpace(n))
		if _, ok := dns.IsDomainName(n); !ok || n == "" {
			return fmt.Errorf("dnsserver: name server %q is not a DNS name", n)
		}
		if !dns.IsFqdn(n) {
			n += "." + s.apex
		}
		ns = append(ns, n)
	}
	s.cache = &cache{src: s.Source, clock: s.now, log: s.log(),
		opts:     zoneOptions{apex: s.apex, ttl: uint32(max(ttl/time.Second, 1)), nameServers: ns},
		cacheFor: orDefault(s.CacheFor, DefaultCacheFor), maxStale: orDefault(s.MaxStale, DefaultMaxStale),
		timeout: orDefault(s.SourceTimeout, DefaultSourceTimeout)}
	s.limiter = newSourceLimiter(orDefault(s.RateLimit, DefaultRateLimit), orDefault(s.RateBurst, DefaultRateBurst))
	lim := s.TCPLimits
	if lim == (netguard.Limits{}) {
		lim = netguard.Limits{PerSource: DefaultTCPPerSource, Total: DefaultTCPTotal}
	}
	s.tcpLim = netguard.NewLimiter("DNS over TCP", lim, s.log())
	s.conns = map[net.Conn]struct{}{}
	return nil
}

// Serve answers queries on udp and tcp (either may be nil, not both) until
// Shutdown or Close, then returns ErrServerClosed; it returns another
// error when the configuration is wrong or a socket fails for good (the
// other is then closed too). Serve owns both sockets: it closes them
// before it returns. It may be called once.
func (s *Server) Serve(udp net.PacketConn, tcp net.Listener) error {
	closeBoth := func() {
		if udp != nil {
			udp.Close()
		}
		if tcp != nil {
			tcp.Close()
		}
	}
	s.mu.Lock()
	switch s.state {
	case stateClosed:
		s.mu.Unlock()
		closeBoth()
		return ErrServerClosed
	case stateServing:
		s.mu.Unlock()
		closeBoth()
		return errors.New("dnsserver: Serve called twice")
	}
	if udp == nil && tcp == nil {
		s.mu.Unlock()
		return errors.New("dnsserver: Serve needs a UDP socket or a TCP listener")
	}
	if err := s.init(); err != nil {
		s.mu.Unlock()
		closeBoth()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.state, s.cancel, s.finished = stateServing, cancel, make(chan struct{})
	s.udp = udp
	if tcp != nil {
		s.tcp = netguard.NewListener(tcp, s.tcpLim, "DNS")
	}
	errc := make(chan error, 1+s.udpWorkers())
	if udp != nil {
		for range s.udpWorkers() {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				errc <- s.serveUDP(ctx, udp)
			}()
		}
	}
	if s.tcp != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			errc <- s.serveTCP(ctx, s.tcp)
		}()
	}
	s.mu.Unlock()

	// The first loop to end says why: a shutdown (nil) or a failed socket.
	err := <-errc
	s.closeAll()
	s.wg.Wait()
	s.tcpLim.Close()
	close(s.finished)
	if err == nil {
		return ErrServerClosed
	}
	return err
}

func (s *Server) udpWorkers() int { return orDefault(s.UDPWorkers, DefaultUDPWorkers) }

// closeAll moves the server to closed and closes its sockets and
// connections; the goroutines then end. Safe to call more than once.
func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosed {
		return
	}
	s.state = stateClosed
	if s.cancel != nil {
		s.cancel()
	}
	if s.udp != nil {
		s.udp.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
	for c := range s.conns {
		c.Close()
	}
}

// closing reports whether the server is shutting down.
func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == stateClosed
}

// Shutdown stops the server: it closes the sockets and every TCP
// connection (a query in flight may lose its answer; its client retries)
// and waits, until ctx ends, for Serve's goroutines. Safe to call twice,
// and before Serve.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeAll()
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	if finished == nil {
		return nil // never served
	}
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("dnsserver: shutdown: %w", ctx.Err())
	}
}

// Close is Shutdown without a deadline.
func (s *Server) Close() error { return s.Shutdown(context.Background()) }

// serveUDP is one UDP worker: read a packet, answer it, repeat. It returns
// nil when the server closes, an error when the socket fails for good.
func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn) error {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if s.closing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dnsserver: UDP socket closed under the server: %w", err)
			}
			// A transient error (an ICMP error reported on the socket, a
			// buffer shortage): wait a little rather than spin.
			s.log().Debug("DNS: UDP read failed; going on", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		s.handleUDP(ctx, pc, buf[:n], addr)
	}
}

// handleUDP answers one UDP packet; a panic ends only this query.
func (s *Server) handleUDP(ctx context.Context, pc net.PacketConn, msg []byte, addr net.Addr) {
	defer panics.Recover(s.log(), "DNS query over UDP", nil)
	if !s.limiter.allow(netguard.AddrIP(addr), s.now()) {
		s.rateLimited(addr)
		return // dropped: a refusal would still reflect traffic at a spoofed source
	}
	if out, _ := s.answer(ctx, msg, true); out != nil {
		_, _ = pc.WriteTo(out, addr)
	}
}

// rateLimited counts a query over its source's rate, and logs the first
// one of a burst and then at most one line a minute.
func (s *Server) rateLimited(addr net.Addr) {
	s.stats.rateLimited.Add(1)
	now := s.now()
	s.limitedMu.Lock()
	defer s.limitedMu.Unlock()
	s.limitedN++
	if s.limitedLast.IsZero() || now.Sub(s.limitedLast) >= netguard.SummaryInterval {
		s.log().Warn("DNS: queries over the per-source rate limit are dropped (UDP) or refused (TCP); one line per minute while it lasts",
			"source", netguard.AddrIP(addr).String(), "limited", s.limitedN, "rate", float64(orDefault(s.RateLimit, DefaultRateLimit)))
		s.limitedLast, s.limitedN = now, 0
	}
}

// serveTCP accepts connections until the server closes.
func (s *Server) serveTCP(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				// Out of descriptors and the like: wait and retry, as
				// net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log().Warn("DNS: TCP accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				continue
			}
			return fmt.Errorf("dnsserver: TCP listener: %w", err)
		}
		backoff = 0
		s.mu.Lock()
		if s.state == stateClosed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(ctx, c)
	}
}

// serveConn answers the queries of one TCP connection (RFC 7766): each
// message within ReadTimeout, the next within IdleTimeout, garbage closes
// it.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	defer panics.Recover(s.log(), "DNS connection over TCP", c.Close)

	readTimeout := orDefault(s.ReadTimeout, DefaultReadTimeout)
	idle := orDefault(s.IdleTimeout, DefaultIdleTimeout)
	writeTimeout := orDefault(s.WriteTimeout, DefaultWriteTimeout)
	src := netguard.AddrIP(c.RemoteAddr())
	wait := readTimeout
	var lenBuf [2]byte
	for range orDefault(s.MaxTCPQueries, DefaultMaxTCPQueries) {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return // closed, idle or silent for too long
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		if n < headerLen {
			return // garbage
		}
		_ = c.SetReadDeadline(time.Now().Add(readTimeout))
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return // a half message: dropped with its connection
		}
		var out []byte
		var malformed bool
		if s.limiter.allow(src, s.now()) {
			out, malformed = s.answer(ctx, msg, false)
		} else {
			s.rateLimited(c.RemoteAddr())
			if binary.BigEndian.Uint16(msg[2:4])&flagQR == 0 {
				out = s.pack(headerReply(msg, dns.RcodeRefused), false, 0)
			}
		}
		if out == nil {
			return // nothing to say to garbage
		}
		frame := make([]byte, 2+len(out))
		binary.BigEndian.PutUint16(frame, uint16(len(out)))
		copy(frame[2:], out)
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := c.Write(frame); err != nil || malformed {
			return // garbage gets its FORMERR, then the connection closes
		}
		wait = idle
	}
}
