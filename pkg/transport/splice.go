package transport

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// Endpoint is one side of a proxied connection: a byte stream whose two
// directions end separately.
type Endpoint interface {
	io.Reader
	io.Writer
	// CloseWrite ends the write direction cleanly (TCP FIN, QUIC FIN); the
	// read direction goes on.
	CloseWrite() error
	// Abort ends both directions abruptly (TCP RST, QUIC RESET_STREAM and
	// STOP_SENDING), so the far end sees an error, never a clean end.
	Abort()
	// Close releases the endpoint once both directions are done.
	Close() error
}

// TCP adapts a TCP connection.
type TCP struct{ *net.TCPConn }

// CloseWrite implements Endpoint.
func (t TCP) CloseWrite() error { return t.TCPConn.CloseWrite() }

// Abort implements Endpoint: linger 0 makes Close send a reset.
func (t TCP) Abort() {
	_ = t.TCPConn.SetLinger(0)
	_ = t.TCPConn.Close()
}

// Stream adapts a QUIC stream.
type Stream struct{ *quic.Stream }

// CloseWrite implements Endpoint: Close on a QUIC stream closes only the
// send direction.
func (s Stream) CloseWrite() error { return s.Stream.Close() }

// Abort implements Endpoint.
func (s Stream) Abort() {
	s.Stream.CancelWrite(StreamReset)
	s.Stream.CancelRead(StreamReset)
}

// Close implements Endpoint. Both directions are already done when Splice
// calls it; closing the send side again is harmless.
func (s Stream) Close() error {
	s.Stream.CancelRead(StreamCanceled) // no-op after EOF
	return s.Stream.Close()
}

const bufSize = 128 << 10

var errSplicePanic = errors.New("internal error while copying (see the log)")

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Result reports what a splice moved.
type Result struct {
	AToB, BToA int64
	// Err is the first error that aborted the splice; nil when both
	// directions ended cleanly.
	Err error
}

// Splice copies a→b and b→a until both directions end, then closes both.
// The end of one direction (EOF) is passed on as a half-close (CloseWrite),
// so the other direction keeps flowing. An error in either direction aborts
// both endpoints, so each peer sees a reset rather than a clean end it could
// mistake for complete data. Memory is bounded: one 128 KiB buffer per
// direction; back-pressure comes from the endpoints' own flow control.
func Splice(a, b Endpoint) Result {
	var res Result
	var once sync.Once
	abort := func(err error) {
		once.Do(func() {
			res.Err = err
			a.Abort()
			b.Abort()
		})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// This goroutine is Splice's own: a panic in an endpoint's Read or
		// Write here ends this one connection (both sides reset), never the
		// process. The caller's goroutine has its own boundary.
		defer panics.Recover(nil, "splice", func() error { abort(errSplicePanic); return nil })
		n, err := pipe(b, a)
		res.AToB = n
		if err != nil {
			abort(err)
		}
	}()
	n, err := pipe(a, b)
	res.BToA = n
	if err != nil {
		abort(err)
	}
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
	return res
}

// pipe copies src to dst; at src's EOF it half-closes dst.
func pipe(dst, src Endpoint) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var written int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			written += int64(w)
			if werr != nil {
				return written, werr
			}
		}
		if errors.Is(rerr, io.EOF) {
			return written, dst.CloseWrite()
		}
		if rerr != nil {
			return written, rerr
		}
	}
}
