// Package impair is a user-space UDP impairment proxy for tests: put it
// between a QUIC (or any UDP) client and its server on loopback, point the
// client at Proxy.Addr instead of the server, and it forwards every
// datagram to the target and every answer back, after dropping, delaying,
// jittering, reordering or rate-limiting them as configured for each
// direction (Profile).
//
//	lossy := impair.Profile{Loss: 0.01, Delay: 100 * time.Millisecond} // 200 ms RTT
//	px, err := impair.New(impair.Config{Target: gatewayAddr, Seed: 1, ToTarget: lossy, ToClient: lossy})
//	if err != nil { ... }
//	defer px.Close()
//	// run the client against px.Addr().String()
//
// Use it where a test needs a bad network without privileges (tc netem
// needs a network namespace and CAP_NET_ADMIN); integration/impair_test.go
// puts it in front of an agent's QUIC connection to the gateway.
//
// Randomness is seeded (Config.Seed): for the same sequence of datagrams
// the same ones are dropped, jittered and held back; nothing uses the
// global source. The profiles can be changed while datagrams flow (Set),
// for example to a blackout (Profile{Loss: 1}) and back. Stats counts what
// each direction did.
//
// Each client address gets its own socket towards the target (kept until
// Close), so the target sees one peer per client and the answers go back
// to the right one. Delays are lower bounds: on a loaded machine the
// proxy's scheduler can run late, and then sends what is overdue in rounds
// of at most 64 datagrams rather than in one burst. It does not emulate
// MTU changes, duplication or corruption.
package impair

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxDatagram is the largest datagram forwarded whole.
const maxDatagram = 64 << 10

// socketBuffer is asked of the kernel for every socket: bursts of a fast
// QUIC sender must not overflow the proxy's receive queue (the kernel caps
// it at net.core.rmem_max).
const socketBuffer = 4 << 20

// Config is a proxy's setup.
type Config struct {
	// Listen is the UDP address clients send to; empty means
	// 127.0.0.1:0 (a free loopback port, see Proxy.Addr).
	Listen string
	// Target is the UDP address of the server, HOST:PORT.
	Target string
	// ToTarget applies to datagrams from the clients to the target,
	// ToClient to the answers.
	ToTarget, ToClient Profile
	// Seed seeds the random decisions of both directions (each has its own
	// stream); the zero seed is a seed like any other.
	Seed uint64
}

// Proxy is a running impairment proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	ln       *net.UDPConn
	target   *net.UDPAddr
	toTarget *direction
	toClient *direction
	done     chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex
	flows  map[netip.AddrPort]*flow
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// flow is one client address and its socket towards the target.
type flow struct {
	client netip.AddrPort
	conn   *net.UDPConn
}

// New validates cfg, listens, and starts forwarding.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.ToTarget.Validate(); err != nil {
		return nil, fmt.Errorf("to target: %w", err)
	}
	if err := cfg.ToClient.Validate(); err != nil {
		return nil, fmt.Errorf("to client: %w", err)
	}
	if cfg.Target == "" {
		return nil, errors.New("impair: no target address")
	}
	target, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("impair: target %q: %w", cfg.Target, err)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("impair: listen address %q: %w", listen, err)
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("impair: listen: %w", err)
	}
	_ = ln.SetReadBuffer(socketBuffer)
	_ = ln.SetWriteBuffer(socketBuffer)
	p := &Proxy{ln: ln, target: target, done: make(chan struct{}), flows: map[netip.AddrPort]*flow{}}
	p.toTarget = newDirection(cfg.ToTarget, rand.New(rand.NewPCG(cfg.Seed, 1)), func(f *flow, b []byte) error {
		_, err := f.conn.Write(b)
		return err
	})
	p.toClient = newDirection(cfg.ToClient, rand.New(rand.NewPCG(cfg.Seed, 2)), func(f *flow, b []byte) error {
		_, err := p.ln.WriteToUDPAddrPort(b, f.client)
		return err
	})
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.toTarget.run(p.done) }()
	go func() { defer p.wg.Done(); p.toClient.run(p.done) }()
	go func() { defer p.wg.Done(); p.readClients() }()
	return p, nil
}

// Addr is the address clients send to.
func (p *Proxy) Addr() *net.UDPAddr { return p.ln.LocalAddr().(*net.UDPAddr) }

// Set replaces both profiles; it applies to the datagrams received from
// now on (those already queued keep their due times).
func (p *Proxy) Set(toTarget, toClient Profile) error {
	if err := toTarget.Validate(); err != nil {
		return fmt.Errorf("to target: %w", err)
	}
	if err := toClient.Validate(); err != nil {
		return fmt.Errorf("to client: %w", err)
	}
	p.toTarget.setProfile(toTarget)
	p.toClient.setProfile(toClient)
	return nil
}

// Stats returns the counters of both directions.
func (p *Proxy) Stats() (toTarget, toClient Stats) {
	return p.toTarget.stats(), p.toClient.stats()
}

// Flows is the number of client addresses seen so far (each has its own
// socket towards the target until Close): a client that reconnects from a
// new port adds one.
func (p *Proxy) Flows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// Close stops forwarding, drops what is still queued, closes every socket
// and waits for every goroutine. It is safe to call more than once; later
// calls return the first call's result.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		flows := p.flows
		p.flows = nil
		p.mu.Unlock()
		close(p.done)
		p.closeErr = p.ln.Close()
		for _, f := range flows {
			f.conn.Close()
		}
	})
	p.wg.Wait()
	return p.closeErr
}

// readClients reads the listening socket until it is closed.
func (p *Proxy) readClients() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := p.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.done:
				return
			default:
			}
			continue // e.g. an ICMP error reported on the socket
		}
		now := time.Now()
		f, err := p.flow(from)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of descriptors, say: the datagram is lost, as on a real
			// network, and the next one tries again.
			p.toTarget.received.Add(1)
			p.toTarget.failed.Add(1)
			continue
		}
		p.toTarget.admit(f, append([]byte(nil), buf[:n]...), now)
	}
}

// flow returns the flow of client, creating it (and its reader) on the
// first datagram; net.ErrClosed once the proxy is closed.
func (p *Proxy) flow(client netip.AddrPort) (*flow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if f := p.flows[client]; f != nil {
		return f, nil
	}
	conn, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, fmt.Errorf("impair: socket towards the target: %w", err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	_ = conn.SetWriteBuffer(socketBuffer)
	f := &flow{client: client, conn: conn}
	p.flows[client] = f
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.readTarget(f)
	}()
	return f, nil
}

// readTarget reads the target's answers to f until f's socket is closed.
func (p *Proxy) readTarget(f *flow) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A connected UDP socket reports ICMP port unreachable as
			// ECONNREFUSED on the next read: the target may come back.
			select {
			case <-p.done:
				return
			default:
			}
			continue
		}
		p.toClient.admit(f, append([]byte(nil), buf[:n]...), time.Now())
	}
}
