package netguard

import (
	"errors"
	"net"
	"sync"
)

// Listener is a net.Listener whose connections hold a slot of a Limiter
// until they are closed. A connection over a cap is closed at once (with
// a TCP reset, so that it holds nothing, not even a FIN_WAIT state) and
// never returned by Accept.
type Listener struct {
	net.Listener
	lim  *Limiter
	name string

	once     sync.Once
	closeErr error
}

// NewListener wraps ln; name says which listener it is in the log ("API",
// "jump host").
func NewListener(ln net.Listener, lim *Limiter, name string) *Listener {
	return &Listener{Listener: ln, lim: lim, name: name}
}

// Accept returns the next connection within the caps.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := l.lim.Acquire(AddrIP(c.RemoteAddr()), l.name)
		if !ok {
			reset(c)
			continue
		}
		return &conn{Conn: c, release: release}, nil
	}
}

// Close closes the listener; it is safe to call more than once (later
// calls return what the first one did). Connections already accepted stay
// open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.closeErr = l.Listener.Close()
	})
	return l.closeErr
}

// reset closes c at once; a TCP connection with a reset.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// conn gives its slot back when closed.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// CloseWrite half-closes a TCP connection.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the underlying connection.
func (c *conn) NetConn() net.Conn { return c.Conn }
