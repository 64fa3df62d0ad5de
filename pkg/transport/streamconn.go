package transport

import (
	"net"

	"github.com/quic-go/quic-go"
)

// StreamConn makes a QUIC stream a net.Conn, for protocols that run over
// one stream (SSH). Close closes both directions.
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
	c.Stream.CancelRead(StreamCanceled)
	return c.Stream.Close()
}

// StreamAddr names the far end of a stream for logs ("gateway", "alice").
type StreamAddr string

func (a StreamAddr) Network() string { return "tunnel" }
func (a StreamAddr) String() string  { return string(a) }
