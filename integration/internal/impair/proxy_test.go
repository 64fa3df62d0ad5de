package impair

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer answers every datagram with itself, until the test ends.
func echoServer(t *testing.T) *net.UDPAddr {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return conn.LocalAddr().(*net.UDPAddr)
}

// startProxy runs a proxy in front of a new echo server.
func startProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	cfg.Target = echoServer(t).String()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dial returns a client socket connected to the proxy.
func dial(t *testing.T, p *Proxy) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(socketBuffer)
	t.Cleanup(func() { c.Close() })
	return c
}

// collector reads numbered datagrams (an 8-byte big-endian sequence
// number first) from c in the order they arrive, until c is closed.
type collector struct {
	mu   sync.Mutex
	seqs []uint64
	at   []time.Time
	wg   sync.WaitGroup
}

func collect(t *testing.T, c *net.UDPConn) *collector {
	col := &collector{}
	col.wg.Add(1)
	go func() {
		defer col.wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, err := c.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil || n < 8 {
				continue
			}
			col.mu.Lock()
			col.seqs = append(col.seqs, binary.BigEndian.Uint64(buf))
			col.at = append(col.at, time.Now())
			col.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); col.wg.Wait() })
	return col
}

func (col *collector) got() []uint64 {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]uint64(nil), col.seqs...)
}

// waitFor polls until cond holds or a generous deadline passes; it
// returns whether cond held.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// sendNumbered sends n datagrams of size bytes numbered 0..n-1, pausing
// every burst datagrams so that no socket queue on loopback overflows.
func sendNumbered(t *testing.T, c *net.UDPConn, n, size, burst int, pause time.Duration) {
	t.Helper()
	b := make([]byte, size)
	for i := range n {
		binary.BigEndian.PutUint64(b, uint64(i))
		if _, err := c.Write(b); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if burst > 0 && (i+1)%burst == 0 {
			time.Sleep(pause)
		}
	}
}

// inversions counts the datagrams that arrived after one numbered higher.
func inversions(seqs []uint64) int {
	n := 0
	var highest uint64
	for i, s := range seqs {
		if i > 0 && s < highest {
			n++
		}
		highest = max(highest, s)
	}
	return n
}

// complete reports whether seqs holds 0..n-1 exactly once each.
func complete(seqs []uint64, n int) bool {
	if len(seqs) != n {
		return false
	}
	seen := make([]bool, n)
	for _, s := range seqs {
		if s >= uint64(n) || seen[s] {
			return false
		}
		seen[s] = true
	}
	return true
}

func TestForwardsBothWaysInOrder(t *testing.T) {
	p := startProxy(t, Config{})
	c := dial(t, p)
	col := collect(t, c)
	const n = 2000
	sendNumbered(t, c, n, 100, 50, time.Millisecond)
	if !waitFor(func() bool { return len(col.got()) == n }) {
		t.Fatalf("got %d of %d echoes through a proxy without impairment", len(col.got()), n)
	}
	seqs := col.got()
	if !complete(seqs, n) || inversions(seqs) != 0 {
		t.Errorf("echoes not 0..%d in order (%d inversions)", n-1, inversions(seqs))
	}
	up, down := p.Stats()
	for name, s := range map[string]Stats{"to target": up, "to client": down} {
		if s.Received != n || s.Forwarded != n || s.Bytes != n*100 || s.Dropped != 0 || s.Reordered != 0 || s.Failed != 0 {
			t.Errorf("%s stats = %+v; want %d datagrams of 100 bytes forwarded, nothing else", name, s, n)
		}
	}
}

// TestClientsKeptApart: each client address has its own mapping, so each
// gets its own answers only.
func TestClientsKeptApart(t *testing.T) {
	p := startProxy(t, Config{})
	c1, c2 := dial(t, p), dial(t, p)
	col1, col2 := collect(t, c1), collect(t, c2)
	sendNumbered(t, c1, 100, 16, 0, 0)
	b := make([]byte, 16)
	for i := range 50 {
		binary.BigEndian.PutUint64(b, uint64(1000+i))
		if _, err := c2.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if !waitFor(func() bool { return len(col1.got()) == 100 && len(col2.got()) == 50 }) {
		t.Fatalf("client 1 got %d of 100, client 2 %d of 50", len(col1.got()), len(col2.got()))
	}
	if n := p.Flows(); n != 2 {
		t.Errorf("Flows() = %d; want 2 clients", n)
	}
	for _, s := range col1.got() {
		if s >= 100 {
			t.Fatalf("client 1 got client 2's datagram %d", s)
		}
	}
	for _, s := range col2.got() {
		if s < 1000 {
			t.Fatalf("client 2 got client 1's datagram %d", s)
		}
	}
}

func TestLoss(t *testing.T) {
	const n = 4000
	p := startProxy(t, Config{Seed: 7, ToTarget: Profile{Loss: 0.05}})
	c := dial(t, p)
	col := collect(t, c)
	sendNumbered(t, c, n, 64, 50, time.Millisecond)
	if !waitFor(func() bool { up, _ := p.Stats(); return up.Received == n }) {
		up, _ := p.Stats()
		t.Fatalf("the proxy read %d of %d datagrams", up.Received, n)
	}
	up, _ := p.Stats()
	// Seeded, so the count is fixed; the bounds are ±6 standard
	// deviations of a 5 % loss over 4000 datagrams anyway.
	if up.Dropped < 120 || up.Dropped > 280 || up.Dropped+up.Forwarded != n {
		t.Errorf("5%% loss over %d datagrams: stats %+v; want about 200 dropped and the rest forwarded", n, up)
	}
	if !waitFor(func() bool { return uint64(len(col.got())) == up.Forwarded }) {
		t.Errorf("the client got %d echoes; want the %d forwarded", len(col.got()), up.Forwarded)
	}

	// The same seed drops the same datagrams.
	p2 := startProxy(t, Config{Seed: 7, ToTarget: Profile{Loss: 0.05}})
	c2 := dial(t, p2)
	col2 := collect(t, c2)
	sendNumbered(t, c2, n, 64, 50, time.Millisecond)
	waitFor(func() bool { return len(col2.got()) == len(col.got()) })
	if a, b := col.got(), col2.got(); !equal(a, b) {
		t.Errorf("two runs with seed 7 let different datagrams through (%d and %d)", len(a), len(b))
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBlackoutAndBack: Set to a total loss stops everything, Set back
// lets datagrams through again.
func TestBlackoutAndBack(t *testing.T) {
	p := startProxy(t, Config{})
	c := dial(t, p)
	col := collect(t, c)
	sendNumbered(t, c, 10, 16, 0, 0)
	if !waitFor(func() bool { return len(col.got()) == 10 }) {
		t.Fatalf("got %d of 10 echoes before the blackout", len(col.got()))
	}
	if err := p.Set(Profile{Loss: 1}, Profile{}); err != nil {
		t.Fatal(err)
	}
	sendNumbered(t, c, 20, 16, 0, 0)
	if !waitFor(func() bool { up, _ := p.Stats(); return up.Received == 30 }) {
		t.Fatal("the proxy did not read the datagrams sent during the blackout")
	}
	if up, _ := p.Stats(); up.Dropped != 20 || up.Forwarded != 10 {
		t.Errorf("stats after a blackout of 20 datagrams: %+v; want 20 dropped, 10 forwarded", up)
	}
	if err := p.Set(Profile{}, Profile{}); err != nil {
		t.Fatal(err)
	}
	sendNumbered(t, c, 5, 16, 0, 0)
	if !waitFor(func() bool { return len(col.got()) == 15 }) {
		t.Fatalf("got %d echoes after the blackout; want 15 (10 before, 5 after)", len(col.got()))
	}
}

// TestDelay: the round trip is at least the sum of the one-way delays
// (no upper bound: the machine may be loaded).
func TestDelay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		up, down Profile
		min      time.Duration
	}{
		{"both ways", Profile{Delay: 40 * time.Millisecond}, Profile{Delay: 40 * time.Millisecond}, 80 * time.Millisecond},
		{"to target only, with jitter", Profile{Delay: 60 * time.Millisecond, Jitter: 20 * time.Millisecond}, Profile{}, 60 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{Seed: 1, ToTarget: tc.up, ToClient: tc.down})
			c := dial(t, p)
			b := make([]byte, 32)
			for i := range 10 {
				binary.BigEndian.PutUint64(b, uint64(i))
				start := time.Now()
				if _, err := c.Write(b); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := c.Read(b); err != nil {
					t.Fatalf("echo %d: %v", i, err)
				}
				if rtt := time.Since(start); rtt < tc.min {
					t.Errorf("round trip %d took %s; want at least %s", i, rtt, tc.min)
				}
			}
		})
	}
}

// TestReorder: held-back datagrams arrive after later ones, and all
// arrive; without Reorder (even with jitter) the order is kept.
func TestReorder(t *testing.T) {
	const n = 300
	for _, tc := range []struct {
		name    string
		prof    Profile
		reorder bool
	}{
		{"reorder", Profile{Reorder: 0.2, ReorderDelay: 20 * time.Millisecond}, true},
		{"delay and jitter only", Profile{Delay: 5 * time.Millisecond, Jitter: 10 * time.Millisecond}, false},
		{"none", Profile{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{Seed: 3, ToTarget: tc.prof})
			c := dial(t, p)
			col := collect(t, c)
			// One datagram a millisecond or slower: the ones after a
			// held-back datagram arrive within its 20 ms.
			sendNumbered(t, c, n, 32, 1, time.Millisecond)
			if !waitFor(func() bool { return len(col.got()) == n }) {
				t.Fatalf("got %d of %d echoes", len(col.got()), n)
			}
			seqs := col.got()
			if !complete(seqs, n) {
				t.Fatalf("echoes are not 0..%d once each", n-1)
			}
			up, _ := p.Stats()
			inv := inversions(seqs)
			if tc.reorder && (inv == 0 || up.Reordered == 0) {
				t.Errorf("%d inversions, %d held back; want datagrams out of order", inv, up.Reordered)
			}
			if !tc.reorder && (inv != 0 || up.Reordered != 0) {
				t.Errorf("%d inversions, %d held back; want the order kept", inv, up.Reordered)
			}
		})
	}
}

// TestRate: a capped direction takes at least size/rate; a queue longer
// than QueueDelay drops the tail.
func TestRate(t *testing.T) {
	t.Run("cap", func(t *testing.T) {
		const n, size, rate = 40, 1000, 100_000
		p := startProxy(t, Config{ToTarget: Profile{Rate: rate, QueueDelay: time.Minute}})
		c := dial(t, p)
		col := collect(t, c)
		start := time.Now()
		sendNumbered(t, c, n, size, 0, 0)
		if !waitFor(func() bool { return len(col.got()) == n }) {
			t.Fatalf("got %d of %d echoes", len(col.got()), n)
		}
		min := time.Duration(n) * size * time.Second / rate
		col.mu.Lock()
		last := col.at[n-1]
		col.mu.Unlock()
		if took := last.Sub(start); took < min {
			t.Errorf("%d × %d bytes at %d B/s took %s; want at least %s", n, size, rate, took, min)
		}
	})
	t.Run("tail drop", func(t *testing.T) {
		const n = 50
		p := startProxy(t, Config{ToTarget: Profile{Rate: 10_000, QueueDelay: 50 * time.Millisecond}})
		c := dial(t, p)
		sendNumbered(t, c, n, 1000, 0, 0)
		if !waitFor(func() bool { up, _ := p.Stats(); return up.Received == n }) {
			t.Fatal("the proxy did not read every datagram")
		}
		// The first leaves at once, the second would wait 100 ms > 50 ms.
		if up, _ := p.Stats(); up.Dropped == 0 || up.Dropped == n {
			t.Errorf("stats %+v; want the queue's tail dropped, not everything", up)
		}
	})
}

// TestLateSchedulerSpreadsBursts: datagrams that are all overdue (the
// scheduler ran late) leave in rounds of at most maxBurst, not at once.
func TestLateSchedulerSpreadsBursts(t *testing.T) {
	var mu sync.Mutex
	var bursts []int
	d := newDirection(Profile{Delay: 10 * time.Millisecond}, nil, func(*flow, []byte) error { return nil })
	d.onBurst = func(n int) {
		mu.Lock()
		bursts = append(bursts, n)
		mu.Unlock()
	}
	const n = 5*maxBurst + 7
	long := time.Now().Add(-time.Second) // received a second ago
	for range n {
		d.admit(nil, []byte{0}, long)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.run(done) }()
	ok := waitFor(func() bool { return d.forwarded.Load() == n })
	close(done)
	wg.Wait()
	if !ok {
		t.Fatalf("sent %d of %d overdue datagrams", d.forwarded.Load(), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bursts {
		if b > maxBurst {
			t.Fatalf("bursts %v: one is larger than %d", bursts, maxBurst)
		}
	}
	if len(bursts) < 6 {
		t.Errorf("bursts %v; want %d overdue datagrams in at least 6 rounds", bursts, n)
	}
}

// TestCloseStopsEverything: Close returns with datagrams still queued for
// a minute, is safe twice, releases the port and leaves no goroutine.
func TestCloseStopsEverything(t *testing.T) {
	target := echoServer(t)
	ignore := goleak.IgnoreCurrent()
	p, err := New(Config{Target: target.String(), ToTarget: Profile{Delay: time.Minute}, ToClient: Profile{Delay: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("queued for a minute")); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { up, _ := p.Stats(); return up.Received == 1 }) {
		t.Fatal("the proxy did not read the datagram")
	}
	addr := p.Addr()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	goleak.VerifyNone(t, ignore)
	ln, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Errorf("the proxy's port is still taken after Close: %v", err)
	} else {
		ln.Close()
	}
	if up, _ := p.Stats(); up.Forwarded != 0 {
		t.Errorf("a datagram due in a minute was forwarded: %+v", up)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no target address"},
		{Config{Target: "127.0.0.1:1", ToTarget: Profile{Loss: 1.5}}, "loss 1.5 is not a probability"},
		{Config{Target: "127.0.0.1:1", ToClient: Profile{Reorder: -0.1}}, "reorder -0.1 is not a probability"},
		{Config{Target: "127.0.0.1:1", ToClient: Profile{Delay: -time.Second}}, "negative duration"},
		{Config{Target: "127.0.0.1:1", ToTarget: Profile{Rate: -1}}, "negative rate"},
	} {
		p, err := New(tc.cfg)
		if err == nil {
			p.Close()
			t.Errorf("New(%+v) succeeded; want %q", tc.cfg, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want %q", tc.cfg, err, tc.want)
		}
	}
	p := startProxy(t, Config{})
	if err := p.Set(Profile{}, Profile{Loss: 2}); err == nil || !strings.Contains(err.Error(), "not a probability") {
		t.Errorf("Set with loss 2 = %v; want a refusal", err)
	}
}

func TestProfileString(t *testing.T) {
	for p, want := range map[Profile]string{
		{}: "none",
		{Loss: 0.01, Delay: 100 * time.Millisecond}: "loss 1%, delay 100ms",
		{Reorder: 0.05}: "reorder 5% by 10ms",
	} {
		if got := p.String(); got != want {
			t.Errorf("%+v.String() = %q; want %q", p, got, want)
		}
	}
}
