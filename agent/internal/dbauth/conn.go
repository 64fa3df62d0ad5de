package dbauth

import (
	"crypto/tls"
	"net"
)

// Endpoint adapts a server connection (TCP, or TLS over TCP) to
// pkg/transport's splice endpoint.
type Endpoint struct{ net.Conn }

// CloseWrite ends the write direction: TLS's close_notify, then TCP FIN.
func (e Endpoint) CloseWrite() error {
	if tc, ok := e.Conn.(*tls.Conn); ok {
		err := tc.CloseWrite()
		if t, ok := tc.NetConn().(*net.TCPConn); ok {
			_ = t.CloseWrite()
		}
		return err
	}
	if t, ok := e.Conn.(*net.TCPConn); ok {
		return t.CloseWrite()
	}
	return nil
}

// Abort resets the connection.
func (e Endpoint) Abort() {
	c := e.Conn
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if t, ok := c.(*net.TCPConn); ok {
		_ = t.SetLinger(0)
	}
	_ = c.Close()
}
