package netguard

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuf) lines(substr string) int {
	n := 0
	for _, l := range strings.Split(s.String(), "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func newLog() (*slog.Logger, *syncBuf) {
	b := &syncBuf{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// loopback returns 127.0.0.N as a local address to dial from; every
// 127/8 address is local on Linux.
func loopback(t *testing.T, n byte) *net.TCPAddr {
	t.Helper()
	if runtime.GOOS != "linux" {
		testenv.Missing(t, "the whole 127.0.0.0/8 on loopback (Linux)")
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, n)}
}

// guarded is a Listener on loopback with an accept loop that hands out
// the connections it got.
type guarded struct {
	ln       *Listener
	lim      *Limiter
	accepted chan net.Conn
	done     chan struct{}
}

func listen(t *testing.T, l Limits) (*guarded, *syncBuf) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, buf := newLog()
	lim := NewLimiter("TCP", l, log)
	g := &guarded{ln: NewListener(raw, lim, "API"), lim: lim, accepted: make(chan net.Conn, 1024), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for {
			c, err := g.ln.Accept()
			if err != nil {
				return
			}
			g.accepted <- c
		}
	}()
	t.Cleanup(func() {
		g.ln.Close()
		<-g.done
		close(g.accepted)
		for c := range g.accepted {
			c.Close()
		}
		lim.Close()
	})
	return g, buf
}

func (g *guarded) dial(t *testing.T, from *net.TCPAddr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: from, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", g.ln.Addr().String())
	if err != nil {
		t.Fatalf("dial from %v: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRefusable dials from, and returns nil if the connection was reset
// before connect returned.
func (g *guarded) dialRefusable(t *testing.T, from *net.TCPAddr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: from, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", g.ln.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatalf("dial from %v: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next returns the next accepted connection, failing after a generous wait.
func (g *guarded) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-g.accepted:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted within 10s")
		return nil
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func remoteIP(c net.Conn) netip.Addr { return AddrIP(c.RemoteAddr()) }

// TestOneSourceCannotStarveAnother: thousands of connections from one
// source get that source's cap and no more; another source still gets in,
// the total cap holds, and a closed connection frees its slot.
func TestOneSourceCannotStarveAnother(t *testing.T) {
	if _, err := RaiseFileLimit(); err != nil {
		t.Logf("RaiseFileLimit: %v", err)
	}
	const perSource, total, flood = 8, 16, 2000
	g, logs := listen(t, Limits{PerSource: perSource, Total: total})
	noisy, quiet, third := loopback(t, 1), loopback(t, 2), loopback(t, 3)

	// Some refusals arrive before connect returns (loopback is fast).
	var clients []net.Conn
	for range flood {
		if c := g.dialRefusable(t, noisy); c != nil {
			clients = append(clients, c)
		}
	}
	var held []net.Conn
	for range perSource {
		c := g.next(t)
		if got := remoteIP(c); got != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("accepted a connection from %v; want 127.0.0.1", got)
		}
		held = append(held, c)
	}
	waitFor(t, "the flood's refusals", func() bool { return g.lim.Stats().RefusedPerSource == flood-perSource })
	// A refused client sees its connection end at once (the first
	// perSource dials were accepted).
	if len(clients) > perSource {
		last := clients[len(clients)-1]
		_ = last.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := last.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("read on a refused connection = %v; want a reset or EOF", err)
		}
	}

	for range perSource {
		g.dial(t, quiet)
		if got := remoteIP(g.next(t)); got != netip.MustParseAddr("127.0.0.2") {
			t.Fatalf("accepted a connection from %v; want 127.0.0.2", got)
		}
	}
	st := g.lim.Stats()
	if st.Active != total || st.LargestSourceCount != perSource {
		t.Fatalf("stats %+v; want %d active, %d at most per source", st, total, perSource)
	}

	// The total is reached: a third source is refused, until a slot frees.
	g.dialRefusable(t, third)
	waitFor(t, "a refusal over the total", func() bool { return g.lim.Stats().RefusedTotal == 1 })
	held[0].Close()
	held[0].Close() // twice gives the slot back once
	g.dial(t, third)
	if got := remoteIP(g.next(t)); got != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("accepted a connection from %v; want 127.0.0.3", got)
	}
	if got := g.lim.Count(); got != total {
		t.Errorf("Count = %d after one close and one accept; want %d", got, total)
	}

	// Refusals are logged per burst, not per connection.
	if n := logs.lines("refus"); n != 2 {
		t.Errorf("%d log lines about refusals for %d refusals; want 2 (one per reason)\n%s", n, flood-perSource+1, logs)
	}
	g.lim.Close()
	out := logs.String()
	if !strings.Contains(out, "refused=1991") || !strings.Contains(out, "busiest_source=127.0.0.1") {
		t.Errorf("summary after Close lacks refused=1991 and busiest_source=127.0.0.1:\n%s", out)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestListenerCloseTwice(t *testing.T) {
	g, _ := listen(t, Limits{PerSource: 1})
	if err := g.ln.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := g.ln.Close(); err != nil {
		t.Fatalf("second Close: %v; want nil", err)
	}
	<-g.done
	if _, err := g.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v; want net.ErrClosed", err)
	}
}

func TestSourceKeyGroupsIPv6By64(t *testing.T) {
	lim := NewLimiter("test", Limits{PerSource: 1}, nil)
	defer lim.Close()
	tests := []struct {
		ip   string
		want bool
	}{
		{"2001:db8:1:2::1", true},
		{"2001:db8:1:2:ffff::9", false}, // same /64
		{"2001:db8:1:3::1", true},       // next /64
		{"192.0.2.1", true},
		{"::ffff:192.0.2.1", false}, // the same IPv4 source, mapped
		{"192.0.2.2", true},
		{"fe80::1%eth0", true},
		{"fe80::2%eth1", false}, // zones do not make new sources
	}
	for _, tt := range tests {
		_, ok := lim.Acquire(netip.MustParseAddr(tt.ip), "test")
		if ok != tt.want {
			t.Errorf("Acquire(%s) = %v; want %v", tt.ip, ok, tt.want)
		}
	}
}

func TestDefaultTotal(t *testing.T) {
	tests := []struct {
		limit uint64
		want  int
	}{
		{0, MaxDefaultTotal},
		{100, 36},   // 100-64: the headroom wins
		{1024, 819}, // 80%
		{20000, 16000},
		{1 << 20, MaxDefaultTotal},
		{1 << 62, MaxDefaultTotal},
		{50, 1},
	}
	for _, tt := range tests {
		if got := DefaultTotal(tt.limit); got != tt.want {
			t.Errorf("DefaultTotal(%d) = %d; want %d", tt.limit, got, tt.want)
		}
	}
}

func TestRaiseFileLimit(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Missing(t, "Linux, where the hard limit is checked")
	}
	got, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if got != rl.Cur || rl.Cur != rl.Max {
		t.Errorf("RaiseFileLimit = %d; limit now soft %d hard %d; want soft = hard = returned", got, rl.Cur, rl.Max)
	}
}

func TestQUICGate(t *testing.T) {
	log, buf := newLog()
	g := NewQUICGate(Limits{PerSource: 2, Total: 3}, log)
	a := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	b := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1000}
	open := func(addr net.Addr) (context.Context, context.CancelFunc, error) {
		base, cancel := context.WithCancel(context.Background())
		ctx, err := g.ConnContext(base, &quic.ClientInfo{RemoteAddr: addr})
		if err != nil {
			cancel()
		}
		return ctx, cancel, err
	}
	c1, cancel1, err := open(a)
	if err != nil {
		t.Fatal(err)
	}
	_, cancel2, err := open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	if g.VerifySourceAddress(a) != true {
		t.Error("VerifySourceAddress = false with 2 unauthenticated in flight and a per-source cap of 2; want true (Retry)")
	}
	if _, _, err := open(a); !errors.Is(err, ErrRefused) {
		t.Fatalf("third unauthenticated connection from one source: err %v; want ErrRefused", err)
	}
	// Once authenticated, a connection no longer counts against its source.
	Authenticated(c1)
	Authenticated(c1)
	if g.VerifySourceAddress(a) {
		t.Error("VerifySourceAddress = true with 1 unauthenticated in flight; want false")
	}
	_, cancel3, err := open(a)
	if err != nil {
		t.Fatalf("after Authenticated, a new connection from the source: %v", err)
	}
	defer cancel3()
	// The total (3) is reached.
	if _, _, err := open(b); !errors.Is(err, ErrRefused) {
		t.Fatalf("connection over the total: err %v; want ErrRefused", err)
	}
	// A connection that ends gives its slots back.
	cancel1()
	waitFor(t, "the slot of a closed connection", func() bool { all, _ := g.Stats(); return all.Active == 2 })
	_, cancel4, err := open(b)
	if err != nil {
		t.Fatalf("after a connection ended: %v", err)
	}
	defer cancel4()
	all, pre := g.Stats()
	if all.RefusedTotal != 1 || pre.RefusedPerSource != 1 {
		t.Errorf("stats all %+v unauthenticated %+v; want one refusal of each", all, pre)
	}
	g.Close()
	g.Close()
	if !strings.Contains(buf.String(), "refusing connections") {
		t.Errorf("no refusal logged:\n%s", buf)
	}
}

func TestErrorLogSummarisesHandshakeNoise(t *testing.T) {
	log, buf := newLog()
	e := NewErrorLog(log)
	l := e.Logger()
	for i := range 1000 {
		l.Printf("http: TLS handshake error from 127.0.0.1:%d: EOF", 1000+i)
	}
	l.Printf("http: Accept error: accept tcp: too many open files; retrying in 5ms")
	l.Printf("http: Accept error: accept tcp: too many open files; retrying in 10ms")
	l.Printf("http: panic serving 127.0.0.1:1: boom\ngoroutine 1 [running]:")
	l.Printf("http: panic serving 127.0.0.1:2: boom\ngoroutine 1 [running]:")
	if n := buf.lines("TLS handshake error"); n != 1 {
		t.Errorf("%d lines for 1000 TLS handshake errors before the summary; want 1\n%s", n, buf)
	}
	if n := buf.lines("accept error"); n != 1 {
		t.Errorf("%d lines for 2 accept errors before the summary; want 1\n%s", n, buf)
	}
	if n := buf.lines("recovered a panic"); n != 2 {
		t.Errorf("%d lines for 2 panics; want 2 (every panic is logged)\n%s", n, buf)
	}
	e.Close()
	e.Close()
	out := buf.String()
	for _, want := range []string{`level=DEBUG msg="HTTP server: TLS handshake error (summary)" count=999`,
		`level=WARN msg="HTTP server: accept error (summary)" count=1`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestBurstEndsWhenQuiet: a key quiet for a whole interval starts a new
// burst (its next event is logged at once again).
func TestBurstEndsWhenQuiet(t *testing.T) {
	var mu sync.Mutex
	var summaries []int64
	b := newBurst(20*time.Millisecond, func(_ string, tl *tally) {
		mu.Lock()
		summaries = append(summaries, tl.count)
		mu.Unlock()
	})
	defer b.Close()
	if !b.note("k", netip.Addr{}, "") {
		t.Fatal("first note not first")
	}
	if b.note("k", netip.Addr{}, "") {
		t.Fatal("second note first")
	}
	waitFor(t, "the burst to end", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.active) == 0
	})
	if !b.note("k", netip.Addr{}, "") {
		t.Error("a note after a quiet interval is not first")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(summaries) != 1 || summaries[0] != 1 {
		t.Errorf("summaries %v; want [1]", summaries)
	}
}

var _ io.Closer = (*Listener)(nil)
