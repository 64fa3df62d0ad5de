package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport/transporttest"
)

// current returns the connection l holds.
func (l *LazyConn) current() *quic.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn
}

// openAndAccept opens a stream through l, announces it with one byte, and
// accepts it on the server connection sc.
func openAndAccept(t *testing.T, ctx context.Context, l *LazyConn, sc *quic.Conn) {
	t.Helper()
	st, err := l.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream = %v", err)
	}
	if _, err := st.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	acc, err := sc.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("the stream did not arrive on the expected server connection: %v", err)
	}
	if _, err := io.ReadFull(acc, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	acc.Close()
}

func TestLazyConn(t *testing.T) {
	ctx := testContext(t)
	ln := quicListener(t)
	_, ctls := testTLS(t)
	ended := make(chan error, 4)
	l := &LazyConn{Addr: ln.Addr().String(), TLS: ctls, Ended: func(err error) { ended <- err }}
	defer l.Close()

	if c := l.current(); c != nil {
		t.Fatal("LazyConn connected before the first OpenStream")
	}
	if l.Quiet() {
		t.Fatal("a LazyConn that never connected is quiet")
	}

	// The first stream dials.
	st, err := l.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream = %v", err)
	}
	st.Write([]byte{1})
	sc1, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc1.AcceptStream(ctx); err != nil {
		t.Fatal(err)
	}
	c1 := l.current()
	if h := l.hearing.Load(); h == nil || h.conn != c1 || l.Quiet() {
		t.Fatalf("the new connection over UDP is not followed (%v) or is quiet", h)
	}

	// The next ones reuse the connection.
	for range 3 {
		openAndAccept(t, ctx, l, sc1)
	}
	if c := l.current(); c != c1 {
		t.Error("LazyConn replaced a live connection")
	}

	// When the gateway closes the connection, the next stream redials.
	sc1.CloseWithError(CodeShutdown, "gateway restarting")
	select {
	case <-c1.Context().Done():
	case <-ctx.Done():
		t.Fatal("the client never noticed the close")
	}
	// Ended is told why.
	select {
	case err := <-ended:
		var ae *quic.ApplicationError
		if !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != CodeShutdown || ae.ErrorMessage != "gateway restarting" {
			t.Errorf("Ended(%v); want the gateway's close, code %d", err, CodeShutdown)
		}
	case <-ctx.Done():
		t.Fatal("Ended was not called when the gateway closed the connection")
	}
	st, err = l.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream after the gateway closed = %v", err)
	}
	st.Write([]byte{1})
	sc2, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc2.AcceptStream(ctx); err != nil {
		t.Fatal(err)
	}
	if c := l.current(); c == c1 || c == nil {
		t.Error("LazyConn did not replace the dead connection")
	}
	if h := l.hearing.Load(); h == nil || h.conn != l.current() {
		t.Error("the redialled connection is not the one followed")
	}
	openAndAccept(t, ctx, l, sc2)
	defer sc2.CloseWithError(CodeNoError, "")

	// Close tells the gateway, and is safe twice.
	c2 := l.current()
	if err := l.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	select {
	case <-sc2.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(sc2.Context()); !errors.As(err, &ae) || ae.ErrorCode != CodeShutdown {
			t.Errorf("gateway saw the connection end with %v; want code %d", err, CodeShutdown)
		}
	case <-ctx.Done():
		t.Error("the gateway never saw the close")
	}
	if c2.Context().Err() == nil {
		t.Error("the connection is still open after Close")
	}
}

// Close releases the UDP socket LazyConn opened.
func TestLazyConnCloseReleasesSocket(t *testing.T) {
	ctx := testContext(t)
	ln := quicListener(t)
	_, ctls := testTLS(t)
	l := &LazyConn{Addr: ln.Addr().String(), TLS: ctls}
	if _, err := l.OpenStream(ctx); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	udp := l.tr.Conn.(*net.UDPConn)
	l.mu.Unlock()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := udp.SetReadDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after Close the UDP socket %s is still open (SetReadDeadline = %v)", udp.LocalAddr(), err)
		udp.Close()
	}
}

func TestLazyConnUnreachable(t *testing.T) {
	// A UDP port nobody answers on.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, ctls := testTLS(t)
	l := &LazyConn{Addr: pc.LocalAddr().String(), TLS: ctls}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if st, err := l.OpenStream(ctx); err == nil {
		st.Close()
		t.Fatal("OpenStream to a silent port succeeded")
	}

	bad := &LazyConn{Addr: "no port", TLS: ctls}
	defer bad.Close()
	if _, err := bad.OpenStream(context.Background()); err == nil {
		t.Error(`OpenStream to "no port" succeeded`)
	}
}

// An idle client whose gateway was killed without a word and restarted on
// the same address: once its connection has heard nothing for
// Silence(Beat), the next stream goes on a new connection to the restarted
// gateway instead of waiting on the dead one (which a restarted gateway no
// longer knows). The quiet connection is kept for the streams it may still
// carry, and closed with the LazyConn.
func TestLazyConnRedialsAQuietGateway(t *testing.T) {
	ctx := testContext(t)
	stls, ctls := testTLS(t)
	muted := transporttest.Listen(t, "127.0.0.1:0")
	tr1 := &quic.Transport{Conn: muted}
	defer tr1.Close()
	ln1, err := tr1.Listen(stls, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	// An idle timeout far above the silence, so that the quiet connection
	// is still open when the stream is opened, however slow the machine.
	conf := QUICConfig()
	conf.MaxIdleTimeout = 5 * time.Minute
	addr := muted.LocalAddr().String()
	l := &LazyConn{Addr: addr, TLS: ctls, conf: conf}
	defer l.Close()

	st, err := l.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{1})
	sc1, err := ln1.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc1.CloseWithError(CodeNoError, "")
	c1 := l.current()

	// The gateway dies without a word; a new one takes its address.
	muted.Kill()
	tr1.Close()
	muted.Close()
	udp2 := transporttest.Listen(t, addr)
	defer udp2.Close()
	tr2 := &quic.Transport{Conn: udp2}
	defer tr2.Close()
	ln2, err := tr2.Listen(stls, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}

	for !l.Quiet() {
		if ctx.Err() != nil {
			t.Fatal("the connection to the dead gateway never went quiet")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c1.Context().Err() != nil {
		t.Fatalf("the quiet connection ended before its idle timeout: %v", context.Cause(c1.Context()))
	}
	st, err = l.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream with a quiet connection and a live gateway = %v", err)
	}
	st.Write([]byte{1})
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sc2, err := ln2.Accept(actx)
	if err != nil {
		t.Fatalf("the stream opened after the connection went quiet never reached the restarted gateway (%v): it went on the dead connection", err)
	}
	defer sc2.CloseWithError(CodeNoError, "")
	if _, err := sc2.AcceptStream(actx); err != nil {
		t.Fatal(err)
	}
	if c := l.current(); c == c1 {
		t.Error("LazyConn still holds the quiet connection")
	}
	if h := l.hearing.Load(); h == nil || h.conn != l.current() {
		t.Error("the new connection is not the one followed")
	}
	if c1.Context().Err() != nil {
		t.Errorf("the quiet connection was closed when replaced: %v", context.Cause(c1.Context()))
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if c1.Context().Err() == nil {
		t.Error("the replaced connection is still open after Close")
	}
}

// retire keeps at most maxStale replaced connections, forgets those that
// ended, and closes the oldest beyond the bound.
func TestLazyConnRetire(t *testing.T) {
	ctx := testContext(t)
	ln := quicListener(t)
	_, ctls := testTLS(t)
	l := &LazyConn{Addr: ln.Addr().String(), TLS: ctls}
	defer l.Close()
	if _, err := l.OpenStream(ctx); err != nil {
		t.Fatal(err)
	}
	var conns []*quic.Conn
	for range maxStale + 2 {
		c, err := l.dialUDP(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	l.mu.Lock()
	for _, c := range conns[:maxStale] {
		l.retire(c)
	}
	l.mu.Unlock()
	for i, c := range conns[:maxStale] {
		if c.Context().Err() != nil {
			t.Fatalf("stale connection %d closed within the bound", i)
		}
	}
	// One ended by itself: it is forgotten, and the next fits.
	conns[1].CloseWithError(CodeNoError, "")
	l.mu.Lock()
	l.retire(conns[maxStale])
	n := len(l.stale)
	l.mu.Unlock()
	if n != maxStale {
		t.Errorf("%d stale connections after one ended; want %d", n, maxStale)
	}
	if conns[0].Context().Err() != nil {
		t.Error("a stale connection was closed though one had ended")
	}
	// Beyond the bound, the oldest is closed.
	l.mu.Lock()
	l.retire(conns[maxStale+1])
	n = len(l.stale)
	l.mu.Unlock()
	if n != maxStale {
		t.Errorf("%d stale connections; want %d", n, maxStale)
	}
	if conns[0].Context().Err() == nil {
		t.Error("the oldest stale connection is still open beyond the bound")
	}
	for i, c := range conns[2:] {
		if c.Context().Err() != nil {
			t.Errorf("stale connection %d closed; only the oldest should be", i+2)
		}
	}
}
