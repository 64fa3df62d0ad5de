package transport

import (
	"net"

	"github.com/quic-go/quic-go"
)

// StreamConn makes a QUIC stream a net.Conn, for protocols that run over
// one stream (SSH). Close ends the write direction (FIN) and leaves the read
// direction to end with the peer's FIN: cancelling it would make the peer's
// writes fail, and a relay in between would then reset the stream, losing
// the last bytes written before Close (such as "access revoked by an
// administrator"). The connection's end reclaims a stream whose peer never
// finishes.
func StreamConn(s *quic.Stream, local, remote net.Addr) net.Conn {
	return &streamConn{Stream: s, local: local, remote: remote}
}

type streamConn struct {
	*quic.Stream
	local, remote net.Addr
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) Close() error {
	return c.Stream.Close()
}

// StreamAddr names the far end of a stream for logs ("gateway", "alice").
type StreamAddr string

func (a StreamAddr) Network() string { return "tunnel" }
func (a StreamAddr) String() string  { return string(a) }
