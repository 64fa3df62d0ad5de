package transport

// QUIC over TCP, the fallback where UDP is blocked: QUIC packets framed on
// a TLS connection to the gateway's API port (ALPN wire.ALPNTCP), each a
// 2-byte big-endian length and the packet. quic-go runs unchanged on top,
// so the streams, their reset codes, flow control and the wire protocol
// are the same as over UDP: the multiplexer is still QUIC (the approach of
// the IETF's "QUIC on Streams" draft), with TCP underneath.
//
// The client side is one QUIC connection over one TLS connection
// (NewStreamPacketConn); the gateway's side gathers every fallback
// connection behind one net.PacketConn (StreamPackets), each peer known by
// its TCP address, so one quic.Listener serves them all.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// MaxFramedPacket bounds one framed packet: quic-go's packets are at most
// 1452 bytes on a connection that is not UDP; a little room above.
const MaxFramedPacket = 2048

// ErrFrame is returned for a frame longer than MaxFramedPacket or than
// the reader's buffer: the peer does not speak the framing.
var ErrFrame = errors.New("QUIC over TCP: frame too long")

// AppendFrame appends the frame of packet p.
func AppendFrame(b, p []byte) ([]byte, error) {
	if len(p) == 0 || len(p) > MaxFramedPacket {
		return b, fmt.Errorf("%w: %d bytes", ErrFrame, len(p))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...), nil
}

// ReadFrame reads one frame from r into buf and returns the packet's
// length. An empty frame is allowed and skipped by callers (a keepalive
// of the framing itself is not used, but it is harmless).
func ReadFrame(r io.Reader, buf []byte) (int, error) {
	var pre [2]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(pre[:]))
	if n > MaxFramedPacket || n > len(buf) {
		return 0, fmt.Errorf("%w: %d bytes", ErrFrame, n)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return n, nil
}

// streamPacketConn is the client side: one peer, one connection.
type streamPacketConn struct {
	c   net.Conn
	r   *bufio.Reader
	wmu sync.Mutex
	buf []byte
}

// NewStreamPacketConn carries QUIC packets on c (a TLS connection that
// negotiated wire.ALPNTCP); its peer is c's remote address. Closing it
// closes c.
func NewStreamPacketConn(c net.Conn) net.PacketConn {
	return &streamPacketConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
}

func (s *streamPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, err := ReadFrame(s.r, p)
		if err != nil {
			return 0, nil, err
		}
		if n > 0 {
			return n, s.c.RemoteAddr(), nil
		}
	}
}

func (s *streamPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b, err := AppendFrame(s.buf[:0], p)
	if err != nil {
		return 0, err
	}
	s.buf = b
	if _, err := s.c.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *streamPacketConn) Close() error                       { return s.c.Close() }
func (s *streamPacketConn) LocalAddr() net.Addr                { return s.c.LocalAddr() }
func (s *streamPacketConn) SetDeadline(t time.Time) error      { return s.c.SetReadDeadline(t) }
func (s *streamPacketConn) SetReadDeadline(t time.Time) error  { return s.c.SetReadDeadline(t) }
func (s *streamPacketConn) SetWriteDeadline(t time.Time) error { return nil }

// StreamPackets is the gateway's side: every QUIC-over-TCP connection
// (Serve) behind one net.PacketConn for a quic.Transport. Packets to a
// peer go through a queue of its own, so that one slow TCP connection does
// not hold the others; a full queue drops, as a UDP socket would.
type StreamPackets struct {
	local net.Addr
	log   *slog.Logger
	in    chan framed
	done  chan struct{}

	mu     sync.Mutex // guards peers, closed, dl, dlTimer
	peers  map[string]*framedPeer
	closed bool
	dl     chan struct{} // closed when the read deadline passes
	dlStop func() bool

	wg        sync.WaitGroup // every Serve
	closeOnce sync.Once
}

type framed struct {
	p    []byte
	from net.Addr
}

type framedPeer struct {
	c    net.Conn
	out  chan []byte
	stop chan struct{}
}

// Queue sizes: packets read and not yet taken by QUIC, and packets queued
// to one peer.
const (
	framedInQueue  = 4096
	framedOutQueue = 512
)

// NewStreamPackets returns a StreamPackets whose local address is local
// (the API listener's).
func NewStreamPackets(local net.Addr, log *slog.Logger) *StreamPackets {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StreamPackets{local: local, log: log, in: make(chan framed, framedInQueue), done: make(chan struct{}),
		peers: map[string]*framedPeer{}, dl: make(chan struct{})}
}

// Serve carries the QUIC packets of one connection until it fails, stays
// silent for IdleTimeout (QUIC keepalives come every KeepAlive), or the
// StreamPackets is closed; it closes c. A second connection from the same
// address replaces the first.
func (s *StreamPackets) Serve(c net.Conn) {
	s.wg.Add(1)
	defer s.wg.Done()
	defer c.Close()
	key := c.RemoteAddr().String()
	p := &framedPeer{c: c, out: make(chan []byte, framedOutQueue), stop: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	old := s.peers[key]
	s.peers[key] = p
	s.mu.Unlock()
	if old != nil {
		old.c.Close()
	}
	defer func() {
		s.mu.Lock()
		if s.peers[key] == p {
			delete(s.peers, key)
		}
		s.mu.Unlock()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(p.stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer panics.Recover(s.log, "QUIC over TCP writer to "+key, c.Close)
		s.write(p)
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	from := c.RemoteAddr()
	for {
		buf := make([]byte, MaxFramedPacket)
		_ = c.SetReadDeadline(time.Now().Add(IdleTimeout))
		n, err := ReadFrame(r, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("QUIC over TCP connection ended", "remote", key, "err", err)
			}
			return
		}
		if n == 0 {
			continue
		}
		select {
		case s.in <- framed{p: buf[:n], from: from}:
		case <-s.done:
			return
		default: // QUIC is behind: drop, as a full socket buffer would
		}
	}
}

// write sends p's queued packets until it stops; a write error closes
// the connection (Serve's read then ends).
func (s *StreamPackets) write(p *framedPeer) {
	var b []byte
	for {
		select {
		case pkt := <-p.out:
			var err error
			if b, err = AppendFrame(b[:0], pkt); err != nil {
				continue
			}
			_ = p.c.SetWriteDeadline(time.Now().Add(HeaderTimeout))
			if _, err := p.c.Write(b); err != nil {
				p.c.Close()
				return
			}
		case <-p.stop:
			return
		}
	}
}

// ReadFrom returns the next packet of any connection.
func (s *StreamPackets) ReadFrom(p []byte) (int, net.Addr, error) {
	s.mu.Lock()
	dl := s.dl
	s.mu.Unlock()
	select {
	case f := <-s.in:
		return copy(p, f.p), f.from, nil
	case <-s.done:
		return 0, nil, net.ErrClosed
	case <-dl:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// WriteTo queues p to the connection of addr; a packet to no connection,
// or to a full queue, is dropped, as UDP would.
func (s *StreamPackets) WriteTo(p []byte, addr net.Addr) (int, error) {
	s.mu.Lock()
	peer := s.peers[addr.String()]
	s.mu.Unlock()
	if peer == nil {
		return len(p), nil
	}
	pkt := append([]byte(nil), p...)
	select {
	case peer.out <- pkt:
	default:
	}
	return len(p), nil
}

// CloseConns ends every connection (their Serve return) but keeps the
// PacketConn open: for a graceful shutdown that must not wait for them
// while the QUIC transport on top is still in use.
func (s *StreamPackets) CloseConns() {
	s.mu.Lock()
	for _, p := range s.peers {
		p.c.Close()
	}
	s.mu.Unlock()
}

// Close ends every connection and waits for their Serve to return. Safe
// to call more than once.
func (s *StreamPackets) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		for _, p := range s.peers {
			p.c.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
	return nil
}

func (s *StreamPackets) LocalAddr() net.Addr { return s.local }

func (s *StreamPackets) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline makes a blocked and every later ReadFrom return
// os.ErrDeadlineExceeded once t passes (quic-go uses it to stop reading).
func (s *StreamPackets) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dlStop != nil {
		s.dlStop()
		s.dlStop = nil
	}
	select {
	case <-s.dl:
		s.dl = make(chan struct{}) // passed before: a new deadline starts clean
	default:
	}
	if t.IsZero() {
		return nil
	}
	dl := s.dl
	if d := time.Until(t); d <= 0 {
		close(dl)
	} else {
		tm := time.AfterFunc(d, func() { close(dl) })
		s.dlStop = tm.Stop
	}
	return nil
}

func (s *StreamPackets) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer do nothing: TCP's buffers apply. They
// keep quic-go from warning that this is not a UDP socket.
func (s *StreamPackets) SetReadBuffer(int) error     { return nil }
func (s *StreamPackets) SetWriteBuffer(int) error    { return nil }
func (s *streamPacketConn) SetReadBuffer(int) error  { return nil }
func (s *streamPacketConn) SetWriteBuffer(int) error { return nil }
