package agent

// The direct path over TCP: a direct stream carried on a TCP connection of
// its own, with mutual TLS 1.3, instead of a stream of the QUIC peer link.
// The bytes then cross the kernel's TCP (large segments, offloads) in 16
// KiB TLS records, as stunnel's do, instead of QUIC packets of at most
// 1,452 bytes packed in user space.
//
// It is opportunistic: each agent that accepts direct streams also listens
// on TCP on the port number of its UDP socket (a separate port space:
// nothing for an operator to open); a calling agent tries the target's
// candidate addresses (the same list as for QUIC) on TCP first, and if no
// TLS connection comes up within peerTCPDialTimeout it goes on with the
// QUIC peer link as before (and skips TCP to that node for
// directRetryAfter, doubling with each failure in a row). direct: {tcp: off}
// in an agent's file (or TUNNEL_DIRECT_TCP=off in its environment, which
// overrides the file) turns it off for that agent, both ways.
//
// One stream per connection: the caller sends the wire.KindPeer header
// with the gateway's ticket, as on QUIC; the target answers one byte:
// peerTCPServe (it serves the stream here: the usual wire.Reply follows)
// or peerTCPUseQUIC (the service needs what only the QUIC path does, a
// database login for the caller: the ticket is untouched and the caller
// opens the stream on QUIC). The checks are those of the QUIC path: both
// certificates against the cluster CA (peerTLS), the ticket taken once
// for this caller, certificate serial and service (expected.take), and
// the stream tracked so the gateway can cut it (expected.serving,
// adoptDirect). TLS session resumption makes a new stream a resumed
// handshake, and the caller keeps one connection per target dialled ahead
// (a spare, at most peerTCPSpareTTL old) so that a new stream waits for
// neither TCP's nor TLS's handshake. A connection that ends without a TLS
// close_notify is an error (notifyConn), never a clean end.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

const (
	// peerTCPALPN is the TLS application protocol of direct streams over TCP.
	peerTCPALPN = "tunnel-peer-tcp/1"
	// peerTCPDialTimeout bounds the TCP connect and TLS handshake of a
	// direct stream over TCP; past it the stream goes over QUIC.
	peerTCPDialTimeout = 500 * time.Millisecond
	// peerTCPAckTimeout bounds the wait for the target's answer to the
	// header.
	peerTCPAckTimeout = time.Second
	// The target's answer to the header.
	peerTCPServe   = 'T'
	peerTCPUseQUIC = 'Q'
	// peerTCPEnv names the environment variable that turns the TCP
	// transport off ("off") whatever the file says.
	peerTCPEnv = "TUNNEL_DIRECT_TCP"
)

// errNoCloseNotify: the peer's TCP connection ended without a TLS
// close_notify, so what came before may be truncated.
var errNoCloseNotify = errors.New("the direct TCP connection ended without a TLS close_notify")

// peerTCPOn reports whether the TCP transport of direct streams is on:
// the file allows it (direct: {tcp: off} turns it off) and the
// environment does not turn it off.
func (a *Agent) peerTCPOn() bool {
	return a.cfg.File.DirectTCPOn() && os.Getenv(peerTCPEnv) != "off"
}

// peerTCP is the calling side's state of the TCP transport.
type peerTCP struct {
	mu       sync.Mutex
	failed   map[string]time.Time // node → when TCP may be tried again
	fails    map[string]int       // node → failures in a row
	quicOnly map[string]bool      // node/service → served over QUIC only
	caches   map[string]tls.ClientSessionCache
	addrs    map[string][]string    // node → its candidates in the last grant
	spares   map[string]*tcpPreDial // node → a connection dialled ahead for its next stream
	live     map[string]int         // node → direct streams over TCP to it now
	wg       sync.WaitGroup         // the dials of spares
	// listening is this agent's TCP listener state: 0 not started, 1
	// listening, 2 not listening (off, or the port taken on TCP).
	listening atomic.Int32
}

func newPeerTCP() *peerTCP {
	return &peerTCP{failed: map[string]time.Time{}, fails: map[string]int{}, quicOnly: map[string]bool{}, caches: map[string]tls.ClientSessionCache{},
		addrs: map[string][]string{}, spares: map[string]*tcpPreDial{}, live: map[string]int{}}
}

// streaming counts a direct stream over TCP to node until the returned
// func is called.
func (p *peerTCP) streaming(node string) (done func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[node]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.live[node]--; p.live[node] <= 0 {
				delete(p.live, node)
			}
		})
	}
}

// liveNodes returns the nodes with a direct stream over TCP now.
func (p *peerTCP) liveNodes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	nodes := make([]string, 0, len(p.live))
	for node := range p.live {
		nodes = append(nodes, node)
	}
	return nodes
}

// known reports whether node has a direct stream over TCP now, or TLS
// sessions of this agent's current certificate.
func (p *peerTCP) known(node string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live[node] > 0 || p.caches[node] != nil
}

// putSpare makes end, a connection to node on addrs just dialled, node's
// spare for its next stream; it is closed if node has one.
func (p *peerTCP) putSpare(node string, addrs []string, end tlsEnd) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spares[node] != nil || len(p.spares) >= maxExpected {
		_ = end.Close()
		return
	}
	d := &tcpPreDial{addrs: addrs, spare: true, done: make(chan struct{}), born: time.Now(), end: end}
	close(d.done)
	p.spares[node] = d
}

// peerTCPSpareTTL is how long a spare connection may wait for its stream;
// the target gives a connection transport.HeaderTimeout for its header.
const peerTCPSpareTTL = transport.HeaderTimeout / 2

// takeSpare returns node's spare connection if there is one young
// enough.
func (p *peerTCP) takeSpare(node string) *tcpPreDial {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.spares[node]
	delete(p.spares, node)
	if d != nil && time.Since(d.born) > peerTCPSpareTTL {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			d.discard() // bounded by peerTCPDialTimeout
		}()
		return nil
	}
	return d
}

// refill dials node's next spare connection (with dial, on addrs) in the
// background, unless it has one.
func (p *peerTCP) refill(node string, addrs []string, dial func() (tlsEnd, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spares[node] != nil || (len(p.spares) >= maxExpected) {
		return
	}
	next := &tcpPreDial{addrs: addrs, spare: true, done: make(chan struct{}), born: time.Now()}
	p.spares[node] = next
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(next.done)
		next.end, next.err = dial()
	}()
}

// sweep closes spares past their age.
func (p *peerTCP) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for node, d := range p.spares {
		if now.Sub(d.born) > peerTCPSpareTTL {
			delete(p.spares, node)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				d.discard()
			}()
		}
	}
}

// closeSpares closes every spare and waits for their dials.
func (p *peerTCP) closeSpares() {
	p.mu.Lock()
	spares := p.spares
	p.spares = map[string]*tcpPreDial{}
	p.mu.Unlock()
	for _, d := range spares {
		d.discard()
	}
	p.wg.Wait()
}

// setAddrs remembers node's candidates from a grant, for the next
// stream's early dial.
func (p *peerTCP) setAddrs(node string, addrs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.addrs[node]; ok || len(p.addrs) < maxExpected {
		p.addrs[node] = append([]string(nil), addrs...)
	}
}

func (p *peerTCP) lastAddrs(node string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[node]
}

func (p *peerTCP) usable(node, service string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Now().After(p.failed[node]) && !p.quicOnly[node+"/"+service]
}

// fail keeps node's direct streams off TCP for a while: directRetryAfter,
// doubling with each failure in a row up to 32 minutes (a node behind a NAT
// that lets only its UDP socket in fails every time, and each try delays
// a stream by up to peerTCPDialTimeout).
func (p *peerTCP) fail(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.fails[node]
	if n < 6 {
		n++
	}
	if _, ok := p.fails[node]; ok || len(p.fails) < maxExpected {
		p.fails[node] = n
	}
	p.failed[node] = time.Now().Add(directRetryAfter << (n - 1))
}

// ok forgets node's failures.
func (p *peerTCP) ok(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.fails, node)
}

func (p *peerTCP) setQUICOnly(node, service string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.quicOnly) < maxExpected {
		p.quicOnly[node+"/"+service] = true
	}
}

// cache returns node's TLS session cache (one per node: every peer has
// the same ServerName).
func (p *peerTCP) cache(node string) tls.ClientSessionCache {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.caches[node]
	if c == nil {
		c = tls.NewLRUClientSessionCache(4)
		p.caches[node] = c
	}
	return c
}

// reset forgets the TLS sessions (after a renewal: a resumed session
// would present the old certificate) and the nodes' failures.
func (p *peerTCP) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.caches = map[string]tls.ClientSessionCache{}
	p.failed = map[string]time.Time{}
	p.fails = map[string]int{}
	for node, d := range p.spares { // dialled with the old certificate
		delete(p.spares, node)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			d.discard()
		}()
	}
}

// notifyConn turns the end of its TCP connection into errNoCloseNotify:
// crypto/tls takes a FIN at a record boundary for a clean end, and a peer
// that died must not look like one that finished.
type notifyConn struct{ *net.TCPConn }

func (c notifyConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if errors.Is(err, io.EOF) {
		err = errNoCloseNotify
	}
	return n, err
}

// tlsEnd is a direct stream's TLS connection as a splice endpoint.
type tlsEnd struct {
	*tls.Conn
	tcp *net.TCPConn
}

// CloseWrite implements transport.Endpoint: a TLS close_notify (the
// other direction goes on).
func (e tlsEnd) CloseWrite() error { return e.Conn.CloseWrite() }

// Abort implements transport.Endpoint: a TCP reset.
func (e tlsEnd) Abort() {
	_ = e.tcp.SetLinger(0)
	_ = e.tcp.Close()
}

// tlsReplyFirst reads the target's wire.Reply before the first byte of
// the stream, and turns a refusal into an error.
type tlsReplyFirst struct {
	tlsEnd
	target string
	log    *slog.Logger
	done   bool
}

func (r *tlsReplyFirst) Read(p []byte) (int, error) {
	if !r.done {
		r.done = true
		_ = r.Conn.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
		rep, err := wire.ReadReply(r.Conn)
		_ = r.Conn.SetReadDeadline(time.Time{})
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, fmt.Errorf("read reply for %s: %w", r.target, err)
		}
		if err := rep.Err(); err != nil {
			r.log.Warn("connection refused", "target", r.target, "reason", err.Error())
			return 0, err
		}
	}
	return r.Conn.Read(p)
}

// dialPeerTCP connects to node over TCP and TLS on the first of addrs to
// answer, within peerTCPDialTimeout.
func (a *Agent) dialPeerTCP(ctx context.Context, node string, addrs []string) (tlsEnd, error) {
	conf, err := a.peerTLS(false, node)
	if err != nil {
		return tlsEnd{}, err
	}
	conf.NextProtos = []string{peerTCPALPN}
	conf.ClientSessionCache = a.peers.tcp.cache(node)
	conf.DynamicRecordSizingDisabled = true
	conf.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768}
	dctx, cancel := context.WithTimeout(ctx, peerTCPDialTimeout)
	defer cancel()
	type result struct {
		c   *net.TCPConn
		err error
	}
	results := make(chan result, len(addrs))
	n := 0
	for _, s := range addrs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil || n == wire.MaxAddrs {
			continue
		}
		// Staggered: the first address to answer wins, and on a LAN it
		// is usually the first, so the others are rarely dialled.
		wait := time.Duration(n) * 50 * time.Millisecond
		n++
		go func() {
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-dctx.Done():
					t.Stop()
					results <- result{nil, dctx.Err()}
					return
				}
			}
			var d net.Dialer
			c, err := d.DialContext(dctx, "tcp", ap.String())
			if err != nil {
				results <- result{nil, err}
				return
			}
			results <- result{c.(*net.TCPConn), nil}
		}()
	}
	if n == 0 {
		return tlsEnd{}, fmt.Errorf("agent %s has no usable address", node)
	}
	var win *net.TCPConn
	var errs []error
	for range n {
		r := <-results
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case win == nil:
			win = r.c
			cancel() // the other connects give up
		default:
			r.c.Close()
		}
	}
	if win == nil {
		return tlsEnd{}, fmt.Errorf("agent %s is not reachable over TCP: %w", node, errors.Join(errs...))
	}
	tc := tls.Client(notifyConn{win}, conf)
	hctx, hcancel := context.WithTimeout(ctx, peerTCPDialTimeout)
	defer hcancel()
	proof := a.cert.Load() // before the handshake: it shows this one or a later one
	if err := tc.HandshakeContext(hctx); err != nil {
		win.Close()
		return tlsEnd{}, fmt.Errorf("TLS with agent %s over TCP: %w", node, err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != peerTCPALPN {
		win.Close()
		return tlsEnd{}, fmt.Errorf("agent %s does not speak %s", node, peerTCPALPN)
	}
	if !cs.DidResume {
		// A resumed session shows the node the certificate of the
		// session's first handshake, not the current one.
		a.peers.proved(node, proof)
	}
	return tlsEnd{Conn: tc, tcp: win}, nil
}

// tcpPreDial is a connection to a node over TCP and TLS, dialled (to the
// node's candidates of the last grant) while the gateway decides, so that
// the handshake overlaps the decision. The TLS handshake checks the node's
// certificate: an address that changed hands fails it.
type tcpPreDial struct {
	addrs []string
	spare bool // dialled for an earlier stream's successor
	born  time.Time
	done  chan struct{}
	end   tlsEnd
	err   error
	// ticket is the ticket offered on end, and ack the target's answer
	// (offerPeerTCP); set with end when done is closed.
	ticket string
	ack    byte
	mu     sync.Mutex // guards taken
	taken  bool
}

// preDialTCP returns a connection to node dialled ahead (the spare left
// by its last stream, or one dialled now, while the gateway decides) if
// its TCP transport may be used and its addresses are known; nil
// otherwise. As soon as the connection is up it offers the stream's header
// with ticket, the one the caller proposed to the gateway, so that the
// target has it when the gateway's announcement arrives (offerPeerTCP).
// Each stream carried over TCP leaves a spare for the next (refill). The
// caller must call discard.
func (a *Agent) preDialTCP(ctx context.Context, node, service, ticket string) *tcpPreDial {
	if !a.peerTCPOn() || !a.peers.tcp.usable(node, service) {
		return nil
	}
	addrs := a.peers.tcp.lastAddrs(node)
	if len(addrs) == 0 {
		return nil
	}
	spare := a.peers.tcp.takeSpare(node)
	d := &tcpPreDial{addrs: addrs, done: make(chan struct{}), born: time.Now()}
	if spare != nil {
		d.addrs, d.spare, d.born = spare.addrs, true, spare.born
	}
	go func() {
		defer close(d.done)
		if spare != nil {
			d.end, d.err = spare.take()
		} else {
			d.end, d.err = a.dialPeerTCP(ctx, node, addrs)
		}
		if d.err == nil {
			d.ack, d.err = offerPeerTCP(d.end, service, ticket)
			d.ticket = ticket
		}
	}()
	return d
}

// offerPeerTCP sends the header of a stream to service under ticket on
// remote and reads the target's one-byte answer (peerTCPServe or
// peerTCPUseQUIC). The target answers at once, before it looks at the
// ticket: no answer means the header did not reach it (a firewall that
// came up under a spare connection, a dead target), and QUIC may carry
// the ticket instead. On an error remote is reset.
func offerPeerTCP(remote tlsEnd, service, ticket string) (byte, error) {
	var ack [1]byte
	err := wire.WriteHeader(remote.Conn, wire.Header{Kind: wire.KindPeer, Target: service, Ticket: ticket})
	if err == nil {
		_ = remote.Conn.SetReadDeadline(time.Now().Add(peerTCPAckTimeout))
		_, err = io.ReadFull(remote.Conn, ack[:])
		_ = remote.Conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		remote.Abort()
	}
	return ack[0], err
}

// take waits for the dial and the offer, and hands the connection over.
func (d *tcpPreDial) take() (tlsEnd, error) {
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	d.taken = true
	return d.end, d.err
}

// discard waits for the dial and closes its connection unless it was
// taken. Safe on nil and twice.
func (d *tcpPreDial) discard() {
	if d == nil {
		return
	}
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.taken && d.err == nil {
		d.taken = true
		d.end.Abort()
	}
}

// carryTCP tries to carry local's direct stream (granted on lease) over
// TCP, on pre if it is not nil. It reports false when nothing of the
// client's went out and the ticket is unused: the caller goes on with the
// QUIC peer link.
func (a *Agent) carryTCP(ctx context.Context, f *transport.Forwarder, local transport.TCP, lease *quic.Stream,
	node, service string, grant wire.Control, pre *tcpPreDial, log *slog.Logger) bool {
	if !a.peerTCPOn() || !a.peers.tcp.usable(node, service) {
		return false
	}
	a.peers.tcp.setAddrs(node, grant.Addrs)
	var (
		remote tlsEnd
		ack    byte
		err    error
	)
	if pre != nil {
		// Offered ahead under the ticket the gateway granted, or dialled
		// ahead only (a gateway that does not take proposed tickets:
		// that header was for nothing, and the target drops it when
		// the connection is reset).
		remote, err = pre.take()
		if err == nil && pre.ticket != grant.Ticket {
			remote.Abort()
			err = errors.New("the gateway granted another ticket than the one offered ahead")
		}
		ack = pre.ack
	}
	if pre == nil || (err != nil && (pre.spare || !slices.Equal(pre.addrs, grant.Addrs) || pre.ticket != grant.Ticket)) {
		// No early dial, a spare that died (the target restarted), a
		// dial to addresses the node no longer has, or another ticket:
		// a new connection.
		remote, err = a.dialPeerTCP(ctx, node, grant.Addrs)
		if err == nil {
			ack, err = offerPeerTCP(remote, service, grant.Ticket)
		}
	}
	switch {
	case err != nil:
		log.Info("direct path over TCP unavailable; using QUIC", "target", f.Target, "err", err)
		a.peers.tcp.fail(node)
		return false
	case ack == peerTCPUseQUIC:
		_ = remote.Close()
		a.peers.tcp.setQUICOnly(node, service)
		return false
	case ack != peerTCPServe:
		// The ticket's fate is unknown: the stream cannot go another way.
		log.Warn("direct stream over TCP: unexpected answer", "target", f.Target)
		remote.Abort()
		local.Abort()
		_ = lease.Close()
		lease.CancelRead(transport.StreamCanceled)
		return true
	}
	log.Debug("direct stream", "target", f.Target, "transport", "tcp")
	a.peers.tcp.ok(node)
	// While it lasts, a renewal shows node the new certificate
	// (peerPool.reprove), so that node keeps the stream past the old one.
	defer a.peers.tcp.streaming(node)()
	// The next stream to node finds a connection ready, dialled once
	// this one ends (not while its first bytes pass).
	addrs := slices.Clone(grant.Addrs)
	defer a.peers.tcp.refill(node, addrs, func() (tlsEnd, error) { return a.dialPeerTCP(a.ctx, node, addrs) })
	// The lease: as on QUIC (carry), the gateway resets it to cut the stream.
	leaseDone := make(chan struct{})
	go func() {
		defer close(leaseDone)
		_, err := io.Copy(io.Discard, io.LimitReader(lease, 1<<16))
		var se *quic.StreamError
		if errors.As(err, &se) && se.Remote {
			reason, _ := wire.CutReason(uint64(se.ErrorCode))
			log.Info("direct stream cut by the gateway", "target", f.Target, "reason", reason)
			remote.Abort()
			local.Abort()
		}
	}()
	stop := context.AfterFunc(ctx, func() { remote.Abort(); local.Abort() })
	res := transport.Splice(local, &tlsReplyFirst{tlsEnd: remote, target: f.Target, log: log})
	stop()
	if res.Err != nil && ctx.Err() == nil {
		// A TCP reset carries no reason: if the gateway cut the stream
		// (the target reset it on the gateway's word), its reset of the
		// lease says why; give it a moment to arrive.
		t := time.NewTimer(2 * time.Second)
		select {
		case <-leaseDone:
		case <-t.C:
		}
		t.Stop()
	}
	_ = lease.Close()
	lease.CancelRead(transport.StreamCanceled)
	<-leaseDone
	return true
}

// listenPeersTCP serves direct streams over TCP on ln, a listener on the
// port of the peer listener's UDP socket (bindPeerPorts), or, if ln is nil,
// on one it opens there, until ctx ends; it returns at once (the listener
// is optional: a port taken on TCP leaves QUIC only). wait waits for its
// goroutines.
func (a *Agent) listenPeersTCP(ctx context.Context, udp net.Addr, ln *net.TCPListener) (wait func()) {
	ua, ok := udp.(*net.UDPAddr)
	conf, err := a.peerTLS(true, "")
	if !ok || !a.peerTCPOn() || err != nil {
		if ln != nil {
			ln.Close()
		}
		a.peers.tcp.listening.Store(2)
		return func() {}
	}
	conf.NextProtos = []string{peerTCPALPN}
	conf.DynamicRecordSizingDisabled = true
	if ln == nil {
		if ln, err = net.ListenTCP("tcp", &net.TCPAddr{IP: ua.IP, Port: ua.Port}); err != nil {
			a.log.Info("direct streams over TCP are off: cannot listen on the UDP socket's port", "port", ua.Port, "err", err)
			a.peers.tcp.listening.Store(2)
			return func() {}
		}
	}
	a.peers.tcp.listening.Store(1)
	a.log.Debug("accepting direct streams over TCP from other agents", "addr", ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.servePeersTCP(ctx, ln, conf)
	}()
	return func() { <-done }
}

// bindPeerPorts opens the agent's UDP socket (its gateway connections and
// the QUIC peer listener) and, when direct streams over TCP are on, a TCP
// listener on the same port number. A port free on UDP may be taken on
// TCP (another program's connection): it then tries another port, up to
// 20 times, and in the end keeps UDP alone (nil listener: QUIC only).
func (a *Agent) bindPeerPorts() (*net.UDPConn, *net.TCPListener, error) {
	if !a.cfg.File.DirectOn() || !a.peerTCPOn() {
		udp, err := net.ListenUDP("udp", nil)
		return udp, nil, err
	}
	var lastErr error
	for range 20 {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, nil, err
		}
		ua := udp.LocalAddr().(*net.UDPAddr)
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ua.IP, Port: ua.Port})
		if err == nil {
			return udp, ln, nil
		}
		lastErr = err
		udp.Close()
	}
	a.log.Info("direct streams over TCP are off: no port was free on both UDP and TCP", "err", lastErr)
	udp, err := net.ListenUDP("udp", nil)
	return udp, nil, err
}

// servePeersTCP accepts direct streams over TCP on ln until ctx ends,
// then closes ln and waits for the streams.
func (a *Agent) servePeersTCP(ctx context.Context, ln *net.TCPListener, conf *tls.Config) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	var conns atomic.Int64
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.Debug("accept a direct TCP connection", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if conns.Add(1) > maxPeerConns {
			conns.Add(-1)
			_ = c.SetLinger(0)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.Add(-1)
			end := tlsEnd{Conn: tls.Server(notifyConn{c}, conf), tcp: c}
			defer panics.Recover(a.log, "direct TCP connection from "+c.RemoteAddr().String(), func() error {
				end.Abort()
				return nil
			})
			a.servePeerTCP(ctx, end)
		}()
	}
}

// servePeerTCP serves one direct stream over TCP.
func (a *Agent) servePeerTCP(ctx context.Context, end tlsEnd) {
	defer end.tcp.Close()
	stop := context.AfterFunc(ctx, end.Abort)
	defer stop()
	// Nothing is authenticated yet: the handshake and the header have a
	// deadline.
	_ = end.tcp.SetDeadline(time.Now().Add(transport.HeaderTimeout))
	if err := end.Conn.HandshakeContext(ctx); err != nil {
		a.log.Debug("direct TCP connection: handshake failed", "remote", end.tcp.RemoteAddr().String(), "err", err)
		return
	}
	cs := end.Conn.ConnectionState()
	if cs.NegotiatedProtocol != peerTCPALPN || len(cs.PeerCertificates) == 0 || len(cs.PeerCertificates[0].URIs) != 1 {
		return
	}
	leaf := cs.PeerCertificates[0]
	caller, err := identity.ParseURI(leaf.URIs[0])
	if err != nil {
		return
	}
	// The connection ends when the latest certificate the caller proved
	// expires (callerProofs: this one, or a later one after a renewal;
	// the handshake alone is a proof, which is all a renewed caller's
	// proveTCP connection brings).
	defer a.peers.proofs.hold(caller.String(), leaf.NotAfter, end.Abort)()
	h, err := wire.ReadHeader(end.Conn)
	if err != nil || h.Kind != wire.KindPeer || h.Ticket == "" {
		a.refuseTCP(end, wire.StatusBadRequest, "expected a peer header with a ticket")
		return
	}
	svc, ok := a.services[h.Target]
	if ok && svc.Credentials != nil {
		// Served over QUIC only (serveDB); the ticket stays untouched.
		_, _ = end.Conn.Write([]byte{peerTCPUseQUIC})
		_ = end.Conn.Close()
		return
	}
	if _, err := end.Conn.Write([]byte{peerTCPServe}); err != nil {
		return
	}
	// The caller may have sent the header before the gateway decided: it
	// resets the connection if the gateway refuses or relays, which ends
	// the wait for the announcement.
	_ = end.tcp.SetDeadline(time.Time{}) // take bounds the wait
	wctx, cancel := context.WithCancel(ctx)
	ahead := readAhead(end, cancel)
	defer func() {
		_ = end.tcp.Close() // ends the read ahead if nothing else did
		ahead.wait()
	}()
	x, err := a.expect.take(wctx, h.Ticket)
	cancel()
	if errors.Is(err, errCallerLeft) {
		// The gateway refused or relayed a stream sent ahead of its
		// decision (or this agent is stopping).
		a.log.Debug("direct stream dropped before its announcement", "caller", caller.Name, "service", h.Target)
		return
	}
	if err != nil {
		a.log.Info("direct stream refused", "caller", caller.Name, "service", h.Target, "reason", err)
		a.refuseTCP(end, wire.StatusDenied, err.Error())
		return
	}
	if x.caller != caller.String() || x.serial != certs.X509SerialHex(leaf) || x.service != h.Target {
		a.log.Warn("direct stream refused: the gateway announced it for another caller, certificate or service",
			"caller", caller.Name, "service", h.Target)
		a.refuseTCP(end, wire.StatusDenied, "this stream was authorised for another caller or service")
		return
	}
	_ = end.tcp.SetDeadline(time.Time{})
	a.servePeerTCPService(ctx, ahead, h.Ticket, x)
}

// aheadEnd is a direct stream's connection whose first read is made
// ahead, while the target waits for the gateway's announcement, so that
// the caller resetting the connection ends the wait (readAhead). Its Read
// returns what that read got first. A clean end (the client's half-close,
// a TLS close_notify) does not end the wait.
type aheadEnd struct {
	tlsEnd
	done chan struct{}
	buf  []byte
	err  error
}

// readAhead starts the read ahead of end; gone is called if it fails
// other than at a clean end. wait waits for it (end closed ends it).
func readAhead(end tlsEnd, gone func()) *aheadEnd {
	e := &aheadEnd{tlsEnd: end, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		buf := make([]byte, 4<<10)
		n, err := end.Conn.Read(buf)
		e.buf, e.err = buf[:n], err
		if err != nil && !errors.Is(err, io.EOF) {
			gone()
		}
	}()
	return e
}

func (e *aheadEnd) wait() { <-e.done }

func (e *aheadEnd) Read(p []byte) (int, error) {
	<-e.done
	if len(e.buf) > 0 {
		n := copy(p, e.buf)
		e.buf = e.buf[n:]
		return n, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	return e.tlsEnd.Conn.Read(p)
}

// servePeerTCPService delivers an authorised direct stream over TCP to
// its local service, as serveService does for QUIC.
func (a *Agent) servePeerTCPService(ctx context.Context, end *aheadEnd, ticket string, x expectation) {
	svc, ok := a.services[x.service]
	if !ok {
		a.refuseTCP(end.tlsEnd, wire.StatusUnavailable, fmt.Sprintf("node %s exposes no service %q", a.identity().Name, x.service))
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		lmu   sync.Mutex // guards local: the gateway's cut may come while it is dialled
		local transport.TCP
	)
	release, ok := a.expect.serving(ticket, x, func(quic.StreamErrorCode) {
		cancel()
		end.Abort()
		lmu.Lock()
		defer lmu.Unlock()
		if local.TCPConn != nil {
			local.Abort()
		}
	})
	defer release()
	if !ok {
		a.refuseTCP(end.tlsEnd, wire.StatusDenied, errTicketInUse.Error())
		return
	}
	defer a.adoptDirect(ticket, x)()
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(sctx, "tcp", svc.Address)
	if err != nil {
		a.log.Warn("cannot reach local service", "service", svc.Name, "address", svc.Address, "err", err)
		a.refuseTCP(end.tlsEnd, wire.StatusDialFailed, fmt.Sprintf("service %s on %s is not reachable at %s", svc.Name, a.identity().Name, svc.Address))
		return
	}
	lmu.Lock()
	local = transport.TCP{TCPConn: c.(*net.TCPConn)}
	lmu.Unlock()
	if x.committed != nil {
		// Nothing passes before the gateway's audit event is durable.
		t := time.NewTimer(transport.HeaderTimeout)
		select {
		case <-x.committed:
			t.Stop()
		case <-sctx.Done():
			t.Stop()
			local.Abort()
			end.Abort()
			return
		case <-t.C:
			local.Abort()
			a.refuseTCP(end.tlsEnd, wire.StatusInternal, "the gateway did not confirm this stream's audit event")
			return
		}
	}
	if err := wire.WriteReply(end.Conn, wire.Reply{Status: wire.StatusOK}); err != nil {
		local.Abort()
		end.Abort()
		return
	}
	a.log.Debug("stream delivered", "service", svc.Name, "caller", x.caller, "direct", true, "transport", "tcp")
	stop := context.AfterFunc(sctx, func() { local.Abort(); end.Abort() })
	defer stop()
	transport.Splice(local, end)
}

// proveTCP shows node this agent's current certificate in a full TLS
// handshake over TCP (its TLS sessions were forgotten at the renewal), so
// that node keeps this agent's older direct streams past the old
// certificate's expiry (callerProofs); the connection is then node's spare
// for its next stream.
func (a *Agent) proveTCP(node string, addrs []string) error {
	end, err := a.dialPeerTCP(a.ctx, node, addrs)
	if err != nil {
		return err
	}
	if end.Conn.ConnectionState().DidResume {
		_ = end.Close()
		return fmt.Errorf("the TLS session with agent %s was resumed: it did not see the current certificate", node)
	}
	a.peers.tcp.putSpare(node, slices.Clone(addrs), end)
	return nil
}

// refuseTCP answers with a refusal and ends the connection cleanly.
func (a *Agent) refuseTCP(end tlsEnd, status wire.Status, msg string) {
	_ = end.tcp.SetDeadline(time.Now().Add(transport.HeaderTimeout))
	_ = wire.WriteReply(end.Conn, wire.Reply{Status: status, Message: msg})
	_ = end.Conn.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(end.Conn, 1<<20))
	_ = end.Conn.Close()
}
