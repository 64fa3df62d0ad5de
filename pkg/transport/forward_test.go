package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

const testTarget = "db-1/postgres"

// fakeOpener opens streams on the client end of a QUIC connection, or
// fails with err.
type fakeOpener struct {
	conn  *quic.Conn
	err   error
	calls atomic.Int32
}

func (o *fakeOpener) OpenStream(ctx context.Context) (*quic.Stream, error) {
	o.calls.Add(1)
	if o.err != nil {
		return nil, o.err
	}
	return o.conn.OpenStreamSync(ctx)
}

// miniGateway serves the far end of the connection: it reads each
// stream's header, answers with reply, and then echoes (StatusOK) or sends
// trailer, bytes a refused client must never see.
type miniGateway struct {
	reply   wire.Reply
	trailer string

	mu      sync.Mutex // guards headers
	headers []wire.Header

	wg sync.WaitGroup
}

// startGateway serves conn until the test ends.
func startGateway(t *testing.T, conn *quic.Conn, reply wire.Reply, trailer string) *miniGateway {
	g := &miniGateway{reply: reply, trailer: trailer}
	ctx, cancel := context.WithCancel(context.Background())
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			st, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.handle(st)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		conn.CloseWithError(CodeShutdown, "test over")
		g.wg.Wait()
	})
	return g
}

func (g *miniGateway) handle(st *quic.Stream) {
	h, err := wire.ReadHeader(st)
	if err != nil {
		Stream{st}.Abort()
		return
	}
	g.mu.Lock()
	g.headers = append(g.headers, h)
	g.mu.Unlock()
	reply := g.reply
	if h.Kind != wire.KindDial || h.Target != testTarget {
		reply = wire.Reply{Status: wire.StatusBadRequest, Message: fmt.Sprintf("unexpected header %+v", h)}
	}
	if err := wire.WriteReply(st, reply); err != nil {
		Stream{st}.Abort()
		return
	}
	if reply.Status != wire.StatusOK {
		// A careless gateway: the refused client's early bytes, or
		// anything else, must not reach it.
		st.Write([]byte(g.trailer))
		st.Close()
		io.Copy(io.Discard, st)
		return
	}
	if _, err := io.Copy(st, st); err != nil {
		Stream{st}.Abort()
		return
	}
	st.Close()
}

func (g *miniGateway) seen() []wire.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]wire.Header(nil), g.headers...)
}

// logRecorder is a slog.Handler that keeps records.
type logRecorder struct {
	mu      sync.Mutex // guards records
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// find returns the attributes of the first record with msg.
func (l *logRecorder) find(msg string) (map[string]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.records {
		if r.Message != msg {
			continue
		}
		attrs := map[string]string{"level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		return attrs, true
	}
	return nil, false
}

type forwarderTest struct {
	f    *Forwarder
	logs *logRecorder
	addr *net.TCPAddr
	stop context.CancelFunc
	done chan error
}

// startForwarder serves f on a fresh loopback listener until the test ends.
func startForwarder(t *testing.T, opener StreamOpener, allow func() error) *forwarderTest {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ft := &forwarderTest{logs: &logRecorder{}, addr: ln.Addr().(*net.TCPAddr), done: make(chan error, 1)}
	ft.f = &Forwarder{Listener: ln, Opener: opener, Target: testTarget, Log: slog.New(ft.logs), Allow: allow}
	ctx, cancel := context.WithCancel(context.Background())
	ft.stop = cancel
	go func() { ft.done <- ft.f.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		ft.wait(t)
	})
	return ft
}

// wait returns Serve's error; Serve must return within 10 s.
func (ft *forwarderTest) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ft.done:
		ft.done <- err // for the next caller
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func (ft *forwarderTest) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ft.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo checks that c is carried to an echoing gateway.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: read %q, %v; want %q", got, err, msg)
	}
}

// wantReset reads c to its end, which must be a reset with no data.
func wantReset(t *testing.T, c net.Conn) {
	t.Helper()
	got, err := io.ReadAll(c)
	if len(got) > 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("local client read %q, then %v; want nothing, then ECONNRESET", got, err)
	}
}

// dialReset connects to the forwarder, which must reset the connection.
// The reset may come so fast that it fails the connect itself.
func (ft *forwarderTest) dialReset(t *testing.T) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ft.addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("dial = %v; want success or ECONNRESET", err)
		}
		return
	}
	defer c.Close()
	wantReset(t, c)
}

func TestForwarderCarries(t *testing.T) {
	cc, sc := quicConns(t)
	gw := startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	ft := startForwarder(t, &fakeOpener{conn: cc}, nil)

	// Three connections open at once, each carried on its own stream.
	var conns []*net.TCPConn
	for i := range 3 {
		c := ft.dial(t)
		echo(t, c, fmt.Sprintf("hello from client %d", i))
		conns = append(conns, c)
	}
	for i, c := range conns {
		echo(t, c, fmt.Sprintf("client %d again", i))
		// A half-close travels to the gateway, and its FIN comes back.
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
			t.Errorf("client %d after CloseWrite: read %q, %v; want a clean end", i, rest, err)
		}
	}
	want := []wire.Header{{Kind: wire.KindDial, Target: testTarget}}
	want = append(want, want[0], want[0])
	if diff := cmp.Diff(want, gw.seen()); diff != "" {
		t.Errorf("headers the gateway read (-want +got):\n%s", diff)
	}
}

func TestForwarderRefused(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusDenied, Message: "policy says no"}, "early bytes")
	ft := startForwarder(t, &fakeOpener{conn: cc}, nil)

	// The client speaks first, as a database client may. The reset may
	// beat the connect or the write on a loaded machine: it is seen there.
	if c, err := net.DialTCP("tcp", nil, ft.addr); err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatal(err)
		}
	} else {
		defer c.Close()
		if _, err := c.Write([]byte("early bytes")); err == nil {
			wantReset(t, c)
		} else if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Errorf("write = %v; want success or a reset", err)
		}
	}
	attrs, ok := ft.logs.find("connection refused")
	if !ok {
		t.Fatal(`no "connection refused" record logged`)
	}
	if attrs["reason"] != "policy says no" || attrs["target"] != testTarget || attrs["level"] != "WARN" {
		t.Errorf("refusal logged with %v; want level WARN, reason %q, target %q", attrs, "policy says no", testTarget)
	}
	// The forwarder goes on serving.
	ft.dialReset(t)
}

func TestForwarderNotConnected(t *testing.T) {
	op := &fakeOpener{err: ErrNotConnected}
	ft := startForwarder(t, op, nil)
	for range 2 {
		ft.dialReset(t)
	}
	if n := op.calls.Load(); n != 2 {
		t.Errorf("OpenStream called %d times; want 2", n)
	}
	if _, ok := ft.logs.find("cannot reach the gateway; connection refused"); !ok {
		t.Error("the refusal was not logged")
	}
}

func TestForwarderAllowRefusesOne(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	op := &fakeOpener{conn: cc}
	var calls atomic.Int32
	allow := func() error {
		if calls.Add(1) == 1 {
			return errors.New("certificate expired")
		}
		return nil
	}
	ft := startForwarder(t, op, allow)

	ft.dialReset(t)
	echo(t, ft.dial(t), "second connection")
	if n := op.calls.Load(); n != 1 {
		t.Errorf("OpenStream called %d times; want 1 (the refused connection opens no stream)", n)
	}
	attrs, ok := ft.logs.find("connection refused")
	if !ok || attrs["err"] != "certificate expired" {
		t.Errorf("refusal logged: %v, %v; want err %q", attrs, ok, "certificate expired")
	}
}

func TestForwarderAllowStops(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	stopErr := fmt.Errorf("certificate revoked: %w", ErrStop)
	var calls atomic.Int32
	allow := func() error {
		if calls.Add(1) == 1 {
			return nil
		}
		return stopErr
	}
	ft := startForwarder(t, &fakeOpener{conn: cc}, allow)

	open := ft.dial(t)
	echo(t, open, "before the stop")
	ft.dialReset(t) // refused, and stops the forwarder
	if err := ft.wait(t); err != stopErr {
		t.Errorf("Serve = %v; want %v", err, stopErr)
	}
	wantReset(t, open) // aborted, not closed cleanly
	if c, err := net.DialTCP("tcp", nil, ft.addr); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
}

func TestForwarderCancel(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	before := goleak.IgnoreCurrent()
	ft := startForwarder(t, &fakeOpener{conn: cc}, nil)
	open := ft.dial(t)
	echo(t, open, "before the cancel")

	ft.stop()
	if err := ft.wait(t); err != nil {
		t.Errorf("Serve after cancel = %v; want nil", err)
	}
	wantReset(t, open)
	if c, err := net.DialTCP("tcp", nil, ft.addr); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
	// Serve's goroutines are gone (those of the gateway's stream handlers
	// end with their streams).
	goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("github.com/tunnelhq/tunnel/pkg/transport.(*miniGateway).handle"))
}

// When the listener fails, Serve returns its error and, as it promises,
// aborts the connections still open rather than waiting for them.
func TestForwarderListenerFails(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	ft := startForwarder(t, &fakeOpener{conn: cc}, nil)
	open := ft.dial(t)
	echo(t, open, "before the failure")

	ft.f.Listener.Close() // behind Serve's back
	err := ft.wait(t)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve = %v; want the accept error", err)
	}
	wantReset(t, open)
}

// blockingListener fails Accept at once; its Close blocks until released.
type blockingListener struct {
	net.Listener
	closing  chan struct{}
	release  chan struct{}
	closeRet atomic.Bool
	once     sync.Once
}

func (l *blockingListener) Accept() (net.Conn, error) { return nil, errors.New("accept failed") }

func (l *blockingListener) Close() error {
	l.once.Do(func() { close(l.closing) })
	<-l.release
	l.closeRet.Store(true)
	return nil
}

// Serve owns the goroutine that closes the listener: it does not return
// while that goroutine still runs.
func TestForwarderServeWaitsForItsGoroutines(t *testing.T) {
	ln := &blockingListener{closing: make(chan struct{}), release: make(chan struct{})}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ln.Listener = tl // for Addr
	f := &Forwarder{Listener: ln, Opener: &fakeOpener{err: ErrNotConnected}, Target: testTarget}
	done := make(chan error, 1)
	go func() { done <- f.Serve(context.Background()) }()

	select {
	case <-ln.closing:
	case <-time.After(10 * time.Second):
		close(ln.release)
		t.Fatal("Serve never closed its listener")
	}
	returned := false
	select {
	case err = <-done:
		returned = true
		t.Errorf("Serve returned (%v) while its goroutine was still closing the listener", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(ln.release)
	if !returned {
		select {
		case err = <-done:
			if !ln.closeRet.Load() {
				t.Error("Serve returned before Listener.Close did")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return")
		}
	}
	if err == nil {
		t.Error("Serve = nil; want the accept error")
	}
}

// panicOpener panics on its first OpenStream, then opens streams.
type panicOpener struct {
	fakeOpener
}

func (o *panicOpener) OpenStream(ctx context.Context) (*quic.Stream, error) {
	if o.calls.Load() == 0 {
		o.calls.Add(1)
		panic("bug reached by one connection")
	}
	return o.fakeOpener.OpenStream(ctx)
}

// A panic while carrying one connection resets that connection only: the
// process lives, the panic is logged and counted, and the next connection
// is carried.
func TestForwarderPanicEndsOneConnection(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	before := panics.Count()
	ft := startForwarder(t, &panicOpener{fakeOpener{conn: cc}}, nil)

	ft.dialReset(t)
	echo(t, ft.dial(t), "after the panic")
	attrs, ok := ft.logs.find("recovered a panic; closed that one connection, the process goes on")
	if !ok || attrs["panic"] != "bug reached by one connection" || !strings.Contains(attrs["stack"], "OpenStream") {
		t.Errorf("panic logged as %v, %v; want its value and stack", attrs, ok)
	}
	if n := panics.Count() - before; n != 1 {
		t.Errorf("panics counted: %d; want 1", n)
	}
}

// A panic in Allow refuses that connection; the listener goes on.
func TestForwarderAllowPanicRefusesOne(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	var calls atomic.Int32
	allow := func() error {
		if calls.Add(1) == 1 {
			panic("bug in Allow")
		}
		return nil
	}
	ft := startForwarder(t, &fakeOpener{conn: cc}, allow)
	ft.dialReset(t)
	echo(t, ft.dial(t), "after the panic")
	if _, ok := ft.logs.find("recovered a panic; closed that one connection, the process goes on"); !ok {
		t.Error("the panic was not logged")
	}
}
