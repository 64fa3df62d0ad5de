package hostile

import (
	"io"
	"net"
	"sync"
	"time"
)

// Dialer opens one connection: a TCP connection, an SSH channel, anything
// that is a net.Conn.
type Dialer func() (net.Conn, error)

// TCPFrom dials dst over TCP from the source address src (an IP; the
// kernel picks the port), so that a test can play several sources on
// 127.0.0.0/8 and keep 127.0.0.1 for the legitimate user.
func TCPFrom(src, dst string, timeout time.Duration) Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
	return func() (net.Conn, error) { return d.Dial("tcp", dst) }
}

// Result counts the connections a flood made.
type Result struct {
	Connected, Failed int
	FirstErr          error
}

// ConnectClose opens n connections, at most workers at once, and closes
// each as soon as it is open: every other TCP connection with a reset
// (SO_LINGER 0, like a port scanner) and the others with a FIN (like a
// load balancer's health check).
func ConnectClose(n, workers int, dial Dialer) Result {
	return flood(n, workers, dial, func(i int, c net.Conn) {
		if tc, ok := c.(*net.TCPConn); ok && i%2 == 1 {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	})
}

// Hold opens n connections, at most workers at once, and keeps them open
// without sending anything; close them with CloseAll.
func Hold(n, workers int, dial Dialer) ([]net.Conn, Result) {
	var mu sync.Mutex
	conns := make([]net.Conn, 0, n)
	res := flood(n, workers, dial, func(_ int, c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	})
	return conns, res
}

// CloseAll closes every connection.
func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

func flood(n, workers int, dial Dialer, use func(int, net.Conn)) Result {
	if workers < 1 {
		workers = 1
	}
	var (
		mu  sync.Mutex
		res Result
		wg  sync.WaitGroup
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := dial()
				mu.Lock()
				if err != nil {
					res.Failed++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				} else {
					res.Connected++
				}
				mu.Unlock()
				if err == nil {
					use(i, c)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return res
}

// Watch reads and discards what a server sends on a connection (a TCP
// connection, an SSH channel, a QUIC stream) until the server closes it or
// the watcher's owner calls Close, and records when and how it ended. Its
// goroutine is owned by the Watch: Close waits for it, so Close on c must
// unblock a pending Read.
type Watch struct {
	conn  io.ReadCloser
	start time.Time
	done  chan struct{}

	mu     sync.Mutex // guards the fields below
	bytes  int64
	end    time.Time
	err    error
	byUs   bool
	closed bool
}

// NewWatch starts watching c.
func NewWatch(c io.ReadCloser) *Watch {
	w := &Watch{conn: c, start: time.Now(), done: make(chan struct{})}
	go w.read()
	return w
}

func (w *Watch) read() {
	defer close(w.done)
	buf := make([]byte, 4096)
	for {
		n, err := w.conn.Read(buf)
		w.mu.Lock()
		w.bytes += int64(n)
		if err != nil {
			w.end, w.err = time.Now(), err
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// Start is when the watch began.
func (w *Watch) Start() time.Time { return w.start }

// WaitClosed waits until the server ends the connection or until the
// deadline, and reports whether the server ended it; after it says true,
// Ended tells when and how.
func (w *Watch) WaitClosed(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
	_, _, byServer := w.Ended()
	return byServer
}

// Ended returns when the connection ended, the read error that ended it
// and whether the server (not Close) ended it.
func (w *Watch) Ended() (time.Time, error, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.end, w.err, !w.end.IsZero() && !w.byUs
}

// Received is the number of bytes the server sent.
func (w *Watch) Received() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes
}

// Close closes the connection and waits for the reader. Safe twice.
func (w *Watch) Close() {
	w.mu.Lock()
	first := !w.closed
	w.closed = true
	if w.end.IsZero() {
		w.byUs = true
	}
	w.mu.Unlock()
	if first {
		_ = w.conn.Close()
	}
	<-w.done
}
