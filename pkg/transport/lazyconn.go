package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// LazyConn is a connection to a gateway for a client that only opens
// streams (tunnel proxy): it dials on the first OpenStream and dials again
// when the connection has died. It implements StreamOpener.
//
// Where UDP is blocked it carries QUIC over TCP (StreamPackets): a dial
// over UDP that has no answer after TCPAfter is raced by one over TLS to
// the same port, the first to connect wins; on TCP, UDP is tried again
// (briefly) on the first stream opened UDPRetry after, and new streams
// move to UDP when it answers.
//
// A connection over UDP that has heard nothing from the gateway for
// Silence(Beat) (see Quiet) is not trusted with a new stream: a gateway
// killed and restarted no longer knows it, and a stream opened on it would
// wait in vain until the idle timeout, or be reset by the restarted
// gateway. The next stream dials a new connection instead, and the quiet
// one is kept for the streams it carries (see stale).
type LazyConn struct {
	// Addr is the gateway's HOST:PORT.
	Addr string
	// TLS is the client TLS configuration (ClientTLS).
	TLS *tls.Config
	// Ended, if set, is called with the cause each time a connection the
	// LazyConn made ends (the gateway closed it, with a reason; it died;
	// the LazyConn closed it), from a goroutine of the LazyConn's that
	// Close waits for: it must not call the LazyConn. Set it before the
	// first OpenStream.
	Ended func(error)

	mu       sync.Mutex // guards the fields below
	conn     *quic.Conn
	tr       *quic.Transport
	tcp      *tcpConn   // the current connection's, when it is over TCP
	retired  []*tcpConn // over TCP, replaced by UDP; closed with the LazyConn
	udpAgain time.Time  // on TCP: when to try UDP again
	// stale are earlier connections over UDP, replaced because they went
	// quiet. A dead gateway's ends at its idle timeout; one whose gateway
	// was alive after all goes on carrying its streams, and is closed with
	// the LazyConn, or when more than maxStale pile up (the oldest).
	stale []*quic.Conn

	// hearing follows the current connection over UDP (nil over TCP),
	// watched by a goroutine that ends with it (wg, see follow): see Quiet.
	hearing atomic.Pointer[Hearing]
	wg      sync.WaitGroup

	conf *quic.Config // tests: instead of QUICConfig()
}

// tcpConn is a QUIC connection carried over TCP, with what carries it.
type tcpConn struct {
	conn *quic.Conn
	tr   *quic.Transport
	pc   net.PacketConn
}

func (c *tcpConn) close() {
	c.conn.CloseWithError(CodeShutdown, "client closing")
	c.tr.Close()
	c.pc.Close()
}

// When LazyConn tries QUIC over TCP, and UDP again.
const (
	TCPAfter     = time.Second
	UDPRetry     = 30 * time.Second
	udpRetryDial = 2 * time.Second
	// maxStale bounds the quiet connections kept for their streams after
	// a new one replaced them: each costs a keepalive every KeepAlive if
	// its gateway turns out alive.
	maxStale = 4
)

// OpenStream opens a stream, connecting first if needed.
func (l *LazyConn) OpenStream(ctx context.Context) (*quic.Stream, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.OpenStreamSync(ctx)
}

func (l *LazyConn) get(ctx context.Context) (*quic.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil && l.conn.Context().Err() == nil {
		if l.tcp != nil && time.Now().After(l.udpAgain) {
			l.udpAgain = time.Now().Add(UDPRetry)
			uctx, cancel := context.WithTimeout(ctx, udpRetryDial)
			c, err := l.dialUDP(uctx)
			cancel()
			if err == nil {
				// New streams go over UDP; those on TCP go on.
				l.retired = append(l.retired, l.tcp)
				l.conn, l.tcp = c, nil
				l.follow(c, true)
			}
		}
		if l.tcp == nil && l.Quiet() {
			// The gateway may have died without a word: dial it again
			// rather than open a stream that may never be answered.
			dctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
			c, err := l.dialUDP(dctx)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("connect to the gateway at %s (it has not answered for %s): %w", l.Addr, Silence(Beat), err)
			}
			l.retire(l.conn)
			l.conn = c
			l.follow(c, true)
		}
		return l.conn, nil
	}
	if l.tcp != nil {
		l.tcp.close()
		l.tcp = nil
	}
	if l.tr == nil {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		l.tr = &quic.Transport{Conn: udp}
	}
	dctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	type result struct {
		conn *quic.Conn
		tcp  *tcpConn
		err  error
	}
	results := make(chan result, 2)
	go func() {
		c, err := l.dialUDP(dctx)
		results <- result{conn: c, err: err}
	}()
	pending, tcpStarted := 1, false
	startTCP := func() {
		tcpStarted = true
		pending++
		go func() {
			tc, err := l.dialTCP(dctx)
			results <- result{tcp: tc, err: err}
		}()
	}
	timer := time.NewTimer(TCPAfter)
	defer timer.Stop()
	var errs []error
	var win *result
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			switch {
			case r.err != nil:
				errs = append(errs, r.err)
				if !tcpStarted {
					startTCP()
				}
			case win == nil:
				win = &r
				cancel() // the other dial gives up
			case r.tcp != nil:
				r.tcp.close()
			default:
				r.conn.CloseWithError(CodeNoError, "another path won")
			}
		case <-timer.C:
			if !tcpStarted {
				startTCP()
			}
		}
	}
	if win == nil {
		return nil, fmt.Errorf("connect to the gateway at %s: %w", l.Addr, errors.Join(errs...))
	}
	if win.tcp != nil {
		l.conn, l.tcp = win.tcp.conn, win.tcp
		l.udpAgain = time.Now().Add(UDPRetry)
		l.follow(l.conn, false)
		return l.conn, nil
	}
	l.conn = win.conn
	l.follow(win.conn, true)
	return l.conn, nil
}

// retire keeps c, a quiet connection a new one replaces, for the streams
// it carries: see stale. Called with mu held.
func (l *LazyConn) retire(c *quic.Conn) {
	l.stale = slices.DeleteFunc(l.stale, func(s *quic.Conn) bool { return s.Context().Err() != nil })
	l.stale = append(l.stale, c)
	if n := len(l.stale) - maxStale; n > 0 {
		for _, s := range l.stale[:n] {
			s.CloseWithError(CodeNoError, "replaced by a newer connection")
		}
		l.stale = slices.Delete(l.stale, 0, n)
	}
}

// follow follows c, the new current connection, until it ends, then tells
// Ended. Over UDP it also keeps its Hearing (see Quiet); over TCP there is
// none, since a gateway that died ends the TCP connection. Called with mu
// held.
func (l *LazyConn) follow(c *quic.Conn, udp bool) {
	var h *Hearing
	if udp {
		h = NewHearing(c, Beat, time.Now())
	}
	l.hearing.Store(h)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if h != nil {
			h.Watch()
		} else {
			<-c.Context().Done()
		}
		if l.Ended != nil {
			l.Ended(context.Cause(c.Context()))
		}
	}()
}

// Quiet implements Quiet: the connection over UDP has heard nothing from
// the gateway for a while, so a Failover tries its other gateways first
// (a stream opened here would wait for a reply until the idle timeout if
// the gateway died). It never waits for a dial in progress.
func (l *LazyConn) Quiet() bool { return l.hearing.Load().Quiet(time.Now()) }

// dialUDP dials the gateway over UDP.
func (l *LazyConn) dialUDP(ctx context.Context) (*quic.Conn, error) {
	addr, err := net.ResolveUDPAddr("udp", l.Addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", l.Addr, err)
	}
	return l.tr.Dial(ctx, addr, l.TLS, l.quicConfig())
}

func (l *LazyConn) quicConfig() *quic.Config {
	if l.conf != nil {
		return l.conf
	}
	return QUICConfig()
}

// dialTCP dials the gateway with QUIC carried over TLS to its TCP port.
func (l *LazyConn) dialTCP(ctx context.Context) (*tcpConn, error) {
	conf := l.TLS.Clone()
	conf.NextProtos = []string{wire.ALPNTCP}
	conf.GetClientCertificate = nil
	// The outer TLS's tickets are not the QUIC connection's: sharing the
	// cache would file them under the QUIC server's name, and the next
	// QUIC dial would offer a ticket the gateway cannot open.
	conf.ClientSessionCache = nil
	c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", l.Addr)
	if err != nil {
		return nil, fmt.Errorf("QUIC over TCP: %w", err)
	}
	if c.(*tls.Conn).ConnectionState().NegotiatedProtocol != wire.ALPNTCP {
		c.Close()
		return nil, errors.New("QUIC over TCP: the gateway does not carry it (an older version?)")
	}
	pc := NewStreamPacketConn(c)
	tr := &quic.Transport{Conn: pc}
	qc, err := tr.Dial(ctx, c.RemoteAddr(), l.TLS, l.quicConfig())
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, fmt.Errorf("QUIC over TCP: %w", err)
	}
	return &tcpConn{conn: qc, tr: tr, pc: pc}, nil
}

// Close closes the connection and its socket. Safe to call twice.
func (l *LazyConn) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.CloseWithError(CodeShutdown, "client closing")
		l.conn = nil
	}
	if l.tcp != nil {
		l.tcp.close()
		l.tcp = nil
	}
	for _, c := range l.retired {
		c.close()
	}
	l.retired = nil
	for _, c := range l.stale {
		c.CloseWithError(CodeShutdown, "client closing")
	}
	l.stale = nil
	// Every connection is closed: their watchers end.
	l.wg.Wait()
	if l.tr != nil {
		// A Transport does not close a socket it was given.
		err := errors.Join(l.tr.Close(), l.tr.Conn.Close())
		l.tr = nil
		return err
	}
	return nil
}
