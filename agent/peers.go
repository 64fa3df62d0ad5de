package agent

// The direct path: streams between two agents over a QUIC connection of
// their own (a peer link) instead of through the gateway's relay.
//
// Every stream is still decided and audited by a gateway: the calling
// agent offers the direct path on its dial stream (wire.Header.Direct);
// the gateway decides, writes the audit event, tells the target agent to
// expect the stream (wire.MsgExpect: a random ticket, the caller's
// identity and certificate serial, the service, the caller's addresses),
// and answers the caller with wire.StatusDirect and wire.MsgDirect (the
// ticket and the target's addresses). The caller opens a wire.KindPeer
// stream with the ticket on its peer link to the target; the target
// serves it only if the gateway announced that ticket for that caller,
// certificate and service, once. The dial stream stays open while the
// direct stream lives: the gateway resets it, and tells the target
// (wire.MsgCut), to cut the stream (revocation, lock, access change).
//
// Peer links use each agent's one UDP socket (the quic.Transport that
// dials the gateways also accepts peers), so no port is opened for them;
// both sides present their cluster agent certificates and check the
// other's (trust.VerifyClusterChain, and the name the gateway gave). When
// a target cannot be reached directly within directDialTimeout, the
// stream goes through the gateway relay instead, and the pair stays on
// the relay for directRetryAfter. `direct: off` in the agent's file turns
// the direct path off for that agent, both ways.
//
// A link, or a direct TCP connection, lives as long as its caller holds a
// valid certificate it proved to the target in a handshake, not only the
// one it began with: after a renewal the caller retires its links (new
// streams get new ones) and shows its new certificate at once to every
// node it still has a direct stream to (reprove); the target keeps one
// record per caller of the latest certificate it proved, and ends that
// caller's links and connections when that one expires (callerProofs in
// peerserve.go). Revocations, locks and access changes still cut each
// stream at once through the gateway.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

const (
	// peerALPN is the TLS application protocol of peer links.
	peerALPN = "tunnel-peer/1"
	// directDialTimeout bounds the setup of a peer link; past it the
	// stream goes through the relay.
	directDialTimeout = 2 * time.Second
	// directRetryAfter: after a failed peer link to a node, its streams go
	// through the relay for this long before the direct path is tried again.
	directRetryAfter = time.Minute
	// peerIdleClose closes a peer link that carried no stream for this long.
	peerIdleClose = time.Minute
	// maxPeerConns bounds the peer links an agent accepts at once.
	maxPeerConns = 1024
	// maxPeerChains bounds the certificate chains (its peers' and its
	// gateways') an agent remembers as verified (Agent.chains).
	maxPeerChains = 1024
)

// peerQUICConfig is the QUIC configuration of peer links.
func peerQUICConfig() *quic.Config {
	c := transport.QUICConfig()
	c.HandshakeIdleTimeout = directDialTimeout * 2
	return c
}

// peerTLS returns the TLS configuration of a peer link: TLS 1.3, the peer
// ALPN, this agent's certificate, and the other side's checked against the
// cluster CAs; node, if set, is the agent the other side must be. The
// certificate and the CAs are read at each handshake, so that a
// configuration built once (the listeners') follows renewals and the
// trust bundles gateways push during a CA rotation.
func (a *Agent) peerTLS(server bool, node string) (*tls.Config, error) {
	if _, _, err := a.peerRoots(); err != nil {
		return nil, err
	}
	verify := func(cs tls.ConnectionState) error {
		id, roots, err := a.peerRoots()
		if err != nil {
			return err
		}
		pid, err := a.chains.Verify(cs.PeerCertificates, roots, id.Cluster, time.Now())
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if pid.Kind != identity.Agent {
			return fmt.Errorf("peer certificate: a %s, not an agent", pid.Kind)
		}
		if node != "" && pid.Name != node {
			return fmt.Errorf("peer certificate: agent %s, not %s", pid.Name, node)
		}
		return nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{peerALPN}, VerifyConnection: verify}
	if server {
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return a.cert.Load(), nil }
		c.ClientAuth = tls.RequireAnyClientCert
	} else {
		// The name is checked by verify, against the cluster CA: agent
		// certificates carry an identity URI, not a DNS name.
		c.InsecureSkipVerify = true
		c.ServerName = "tunnel-peer"
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.cert.Load(), nil }
	}
	return c, nil
}

// peerCAs is the pool of the cluster CAs of one identity (peerRoots).
type peerCAs struct {
	id    *Identity
	roots *x509.CertPool
}

// peerRoots returns the agent's identity and the pool of its cluster CAs,
// parsed once per identity (a renewal or a pushed trust bundle sets a new
// one).
func (a *Agent) peerRoots() (*Identity, *x509.CertPool, error) {
	id := a.identity()
	if c := a.peerCAs.Load(); c != nil && c.id == id {
		return id, c.roots, nil
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(id.CAPEM)) {
		return nil, nil, errors.New("the agent's identity holds no CA certificate")
	}
	a.peerCAs.Store(&peerCAs{id: id, roots: roots})
	return id, roots, nil
}

// localCandidates returns this agent's candidate addresses for peers: each
// of its interface addresses (but link-local ones) with the port of its
// UDP socket. The gateway adds the address it observes.
func localCandidates(port int) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr()
		if ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, uint16(port)).String())
		if len(out) == wire.MaxAddrs-1 { // one left for the observed address
			break
		}
	}
	return out
}

// peerLink is a QUIC connection to another agent, for direct streams.
type peerLink struct {
	node   string
	addrs  []string // the node's candidates it was dialled on
	conn   *quic.Conn
	active atomic.Int64
	last   atomic.Int64 // unix nanoseconds of the last stream's end
}

func (l *peerLink) alive() bool { return l.conn.Context().Err() == nil }

// peerPool holds this agent's outgoing peer links, one per target node.
type peerPool struct {
	a       *Agent
	mu      sync.Mutex
	links   map[string]*peerLink
	retired map[*peerLink]struct{} // replaced after a renewal, draining
	failed  map[string]time.Time   // node → when the direct path may be tried again
	dialing map[string]*peerDial
	wg      sync.WaitGroup
	tcp     *peerTCP     // direct streams over TCP (peertcp.go)
	ahead   *aheadGrants // grants of direct streams decided ahead (ahead.go)

	// proven: node → the expiry of the latest certificate this agent
	// showed it in a full handshake (QUIC or TCP); proving: the nodes
	// being shown the current one (reprove).
	proven  map[string]time.Time
	proving map[string]bool

	// proofs is the serving side's record of what each caller proved
	// (peerserve.go), for the QUIC and the TCP servers alike.
	proofs callerProofs

	// inbound: caller identity URI → the QUIC peer links it holds to
	// this agent now (servePeer), so that a new stream of a caller
	// already linked sends it no punch.
	inbound map[string]int
}

// linkedFrom counts a QUIC peer link from caller until the returned func
// is called.
func (p *peerPool) linkedFrom(caller string) (done func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inbound == nil {
		p.inbound = map[string]int{}
	}
	p.inbound[caller]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.inbound[caller]--; p.inbound[caller] <= 0 {
				delete(p.inbound, caller)
			}
		})
	}
}

// linked reports whether caller holds a QUIC peer link to this agent.
func (p *peerPool) linked(caller string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inbound[caller] > 0
}

type peerDial struct {
	done chan struct{}
	link *peerLink
	err  error
}

func newPeerPool(a *Agent) *peerPool {
	return &peerPool{a: a, links: map[string]*peerLink{}, retired: map[*peerLink]struct{}{},
		failed: map[string]time.Time{}, dialing: map[string]*peerDial{}, tcp: newPeerTCP(), ahead: newAheadGrants(a),
		proven: map[string]time.Time{}, proving: map[string]bool{}}
}

// usable reports whether the direct path to node may be tried now.
func (p *peerPool) usable(node string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Now().After(p.failed[node])
}

// fail keeps node's streams on the relay for directRetryAfter.
func (p *peerPool) fail(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed[node] = time.Now().Add(directRetryAfter)
	if l := p.links[node]; l != nil && !l.alive() {
		delete(p.links, node)
	}
}

// open opens a stream to node on its peer link, dialling addrs first if
// there is none; release must be called when the stream ends.
func (p *peerPool) open(ctx context.Context, node string, addrs []string) (*quic.Stream, func(), error) {
	l, err := p.link(ctx, node, addrs)
	if err != nil {
		return nil, nil, err
	}
	octx, cancel := context.WithTimeout(ctx, directDialTimeout)
	defer cancel()
	l.active.Add(1)
	st, err := l.conn.OpenStreamSync(octx)
	if err != nil {
		l.active.Add(-1)
		return nil, nil, fmt.Errorf("open a stream to agent %s: %w", node, err)
	}
	var once sync.Once
	return st, func() {
		once.Do(func() {
			l.last.Store(time.Now().UnixNano())
			l.active.Add(-1)
		})
	}, nil
}

// offer opens a stream to node on its live peer link, if it has one (it
// dials none), and sends the header of a stream to service under ticket,
// the one the caller proposed to the gateway, so that the target has it
// when the gateway's announcement arrives. It returns nil if it could not.
// The caller must drop or use the returned offer.
func (p *peerPool) offer(node, service, ticket string) *peerOffer {
	p.mu.Lock()
	l := p.links[node]
	p.mu.Unlock()
	if l == nil || !l.alive() {
		return nil
	}
	l.active.Add(1)
	release := func() {
		l.last.Store(time.Now().UnixNano())
		l.active.Add(-1)
	}
	st, err := l.conn.OpenStream()
	if err == nil {
		if err = wire.WriteHeader(st, wire.Header{Kind: wire.KindPeer, Target: service, Ticket: ticket}); err != nil {
			transport.Stream{Stream: st}.Abort()
		}
	}
	if err != nil {
		release()
		return nil
	}
	return &peerOffer{st: st, ticket: ticket, release: release}
}

// peerOffer is a stream whose header went to the target ahead of the
// gateway's decision (peerPool.offer).
type peerOffer struct {
	st      *quic.Stream
	ticket  string
	release func()
}

// drop resets an offer that will not be used: the target stops waiting
// for its announcement. Safe on nil.
func (o *peerOffer) drop() {
	if o == nil {
		return
	}
	transport.Stream{Stream: o.st}.Abort()
	o.release()
}

// link returns the live peer link to node, dialling it (once for all
// concurrent callers) if there is none.
func (p *peerPool) link(ctx context.Context, node string, addrs []string) (*peerLink, error) {
	p.mu.Lock()
	if l := p.links[node]; l != nil && l.alive() {
		p.mu.Unlock()
		return l, nil
	}
	d := p.dialing[node]
	if d == nil {
		d = &peerDial{done: make(chan struct{})}
		p.dialing[node] = d
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			d.link, d.err = p.dial(node, addrs)
			p.mu.Lock()
			delete(p.dialing, node)
			if d.err == nil {
				p.links[node] = d.link
			}
			p.mu.Unlock()
			close(d.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-d.done:
		return d.link, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// dial races a QUIC handshake to each of node's candidate addresses; the
// first to complete wins and the others are closed.
func (p *peerPool) dial(node string, addrs []string) (*peerLink, error) {
	tr := p.a.tr.Load()
	if tr == nil {
		return nil, errors.New("no UDP socket yet")
	}
	tlsConf, err := p.a.peerTLS(false, node)
	if err != nil {
		return nil, err
	}
	proof := p.a.cert.Load() // before the handshake: it shows this one or a later one
	ctx, cancel := context.WithTimeout(p.a.ctx, directDialTimeout)
	defer cancel()
	type result struct {
		conn *quic.Conn
		err  error
	}
	results := make(chan result, len(addrs))
	n := 0
	for _, s := range addrs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil || n == wire.MaxAddrs {
			continue
		}
		n++
		go func() {
			c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(ap), tlsConf, peerQUICConfig())
			results <- result{c, err}
		}()
	}
	if n == 0 {
		return nil, fmt.Errorf("agent %s has no usable address", node)
	}
	var win *quic.Conn
	var errs []error
	for range n {
		r := <-results
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case win == nil:
			win = r.conn
			cancel() // the other handshakes give up
		default:
			r.conn.CloseWithError(transport.CodeNoError, "another address won")
		}
	}
	if win == nil {
		return nil, fmt.Errorf("agent %s is not reachable directly: %w", node, errors.Join(errs...))
	}
	// Peer links never resume a TLS session (no session cache): the
	// handshake showed node the certificate.
	p.proved(node, proof)
	l := &peerLink{node: node, addrs: append([]string(nil), addrs...), conn: win}
	l.last.Store(time.Now().UnixNano())
	return l, nil
}

// proved records that node saw cert in a full handshake.
func (p *peerPool) proved(node string, cert *tls.Certificate) {
	if cert == nil || cert.Leaf == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if na := cert.Leaf.NotAfter; na.After(p.proven[node]) {
		p.proven[node] = na
	}
}

// retireAll moves every link out of use (after a renewal: new streams use
// links with the new certificate); each closes once its streams end. Every
// node this agent still has a direct stream to is shown the new
// certificate at once (reprove), so that it keeps those streams past the
// old certificate's expiry. The grants held ahead are dropped: the
// gateway announced them with the old certificate.
func (p *peerPool) retireAll() {
	p.ahead.dropAll()
	p.tcp.reset()
	p.mu.Lock()
	for node, l := range p.links {
		p.retired[l] = struct{}{}
		delete(p.links, node)
	}
	p.mu.Unlock()
	p.reprove()
}

// reprove shows the current certificate to every node this agent has a
// live direct stream to (over QUIC or TCP) and has not shown it yet: it
// dials that node a new connection, which new streams use too (a QUIC
// link, or over TCP the node's spare connection). The node then keeps
// the older links and streams as long as the new certificate
// (callerProofs). After a renewal (retireAll), and at every sweep for the
// nodes a first try missed.
func (p *peerPool) reprove() {
	cert := p.a.cert.Load()
	if cert == nil || cert.Leaf == nil || p.a.ctx == nil || p.a.ctx.Err() != nil {
		return
	}
	want := cert.Leaf.NotAfter
	type plan struct {
		addrs []string
		tcp   bool // it has direct streams over TCP: prove over TCP first
	}
	plans := map[string]*plan{}
	if p.a.peerTCPOn() {
		for _, node := range p.tcp.liveNodes() {
			if addrs := p.tcp.lastAddrs(node); len(addrs) > 0 {
				plans[node] = &plan{addrs: addrs, tcp: true}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	quicLive := func(l *peerLink) {
		if !l.alive() || l.active.Load() == 0 || len(l.addrs) == 0 {
			return
		}
		if pl := plans[l.node]; pl == nil {
			plans[l.node] = &plan{addrs: l.addrs}
		}
	}
	for _, l := range p.links {
		quicLive(l)
	}
	for l := range p.retired {
		quicLive(l)
	}
	for node, pl := range plans {
		if !p.proven[node].Before(want) || p.proving[node] {
			continue
		}
		p.proving[node] = true
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() {
				p.mu.Lock()
				delete(p.proving, node)
				p.mu.Unlock()
			}()
			defer panics.Recover(p.a.log, "showing agent "+node+" the renewed certificate", nil)
			p.prove(node, pl.addrs, pl.tcp)
		}()
	}
}

// prove shows node the current certificate: over TCP first if asked, else
// (or if that fails) on a new QUIC link, which replaces node's link for
// new streams.
func (p *peerPool) prove(node string, addrs []string, overTCP bool) {
	if overTCP {
		err := p.a.proveTCP(node, addrs)
		if err == nil {
			return
		}
		p.a.log.Debug("cannot show the renewed certificate over TCP; trying QUIC", "node", node, "err", err)
	}
	l, err := p.dial(node, addrs)
	if err != nil {
		p.a.log.Warn("cannot show the renewed certificate to an agent this one has direct streams to; retrying (they end when the old certificate expires)",
			"node", node, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.a.ctx.Err() != nil {
		l.conn.CloseWithError(transport.CodeShutdown, "agent shutting down")
		return
	}
	if old := p.links[node]; old != nil {
		p.retired[old] = struct{}{}
	}
	p.links[node] = l
}

// sweep closes links idle for peerIdleClose, retired links with no
// stream, and forgets dead ones.
func (p *peerPool) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for node, l := range p.links {
		idle := l.active.Load() == 0 && now.Sub(time.Unix(0, l.last.Load())) > peerIdleClose
		if !l.alive() || idle {
			l.conn.CloseWithError(transport.CodeNoError, "idle")
			delete(p.links, node)
		}
	}
	for l := range p.retired {
		if !l.alive() || l.active.Load() == 0 {
			l.conn.CloseWithError(transport.CodeNoError, "replaced")
			delete(p.retired, l)
		}
	}
	// Forget what was shown to nodes this agent has no link to any more,
	// nor TCP sessions since the last renewal (the next full handshake
	// tells again).
	linked := map[string]bool{}
	for node := range p.links {
		linked[node] = true
	}
	for l := range p.retired {
		linked[l.node] = true
	}
	for node := range p.proven {
		if !linked[node] && !p.tcp.known(node) {
			delete(p.proven, node)
		}
	}
}

// run sweeps until ctx ends, then closes every link and waits for the
// dials in flight.
func (p *peerPool) run(ctx context.Context) {
	t := time.NewTicker(peerIdleClose / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.ahead.close()
			p.mu.Lock()
			for _, l := range p.links {
				l.conn.CloseWithError(transport.CodeShutdown, "agent shutting down")
			}
			for l := range p.retired {
				l.conn.CloseWithError(transport.CodeShutdown, "agent shutting down")
			}
			p.mu.Unlock()
			p.wg.Wait()
			p.tcp.closeSpares()
			return
		case now := <-t.C:
			p.sweep(now)
			p.tcp.sweep(now)
			p.reprove()
		}
	}
}
