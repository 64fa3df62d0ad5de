package dnsstub

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
)

// connLimiter is a listener that keeps at most max connections open: when
// one more arrives, the oldest is closed. Clients that connect and say
// nothing therefore cannot lock out the next client, whatever their
// number; the idle timeout closes them anyway.
type connLimiter struct {
	net.Listener
	max     int
	evicted *atomic.Int64

	mu    sync.Mutex
	conns list.List // of *limitedConn, oldest first
}

func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l}
	var oldest *limitedConn
	l.mu.Lock()
	if l.conns.Len() >= l.max {
		e := l.conns.Front()
		oldest = e.Value.(*limitedConn)
		l.conns.Remove(e)
		oldest.elem = nil
	}
	lc.elem = l.conns.PushBack(lc)
	l.mu.Unlock()
	if oldest != nil {
		l.evicted.Add(1)
		_ = oldest.Conn.Close() // its server goroutine sees the error and ends
	}
	return lc, nil
}

// limitedConn leaves the limiter's list when it is closed.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	elem *list.Element // nil once removed; guarded by l.mu
	once sync.Once
	err  error
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.elem != nil {
			c.l.conns.Remove(c.elem)
			c.elem = nil
		}
		c.l.mu.Unlock()
		c.err = c.Conn.Close()
	})
	return c.err
}
