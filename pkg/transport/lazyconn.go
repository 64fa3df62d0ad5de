package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// LazyConn is a connection to a gateway for a client that only opens
// streams (tunnel proxy): it dials on the first OpenStream and dials again
// when the connection has died. It implements StreamOpener.
type LazyConn struct {
	// Addr is the gateway's HOST:PORT.
	Addr string
	// TLS is the client TLS configuration (ClientTLS).
	TLS *tls.Config

	mu   sync.Mutex // guards conn, tr
	conn *quic.Conn
	tr   *quic.Transport
}

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
		return l.conn, nil
	}
	if l.tr == nil {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		l.tr = &quic.Transport{Conn: udp}
	}
	addr, err := net.ResolveUDPAddr("udp", l.Addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", l.Addr, err)
	}
	dctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	c, err := l.tr.Dial(dctx, addr, l.TLS, QUICConfig())
	if err != nil {
		return nil, fmt.Errorf("connect to the gateway at %s: %w", l.Addr, err)
	}
	l.conn = c
	return c, nil
}

// Close closes the connection and its socket. Safe to call twice.
func (l *LazyConn) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.CloseWithError(CodeShutdown, "client closing")
		l.conn = nil
	}
	if l.tr != nil {
		// A Transport does not close a socket it was given.
		err := errors.Join(l.tr.Close(), l.tr.Conn.Close())
		l.tr = nil
		return err
	}
	return nil
}
