package integration

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mgfLineEvery is how often a flow sends a line: about 20 lines (1.2 KiB)
// a second each way, enough to see any gap and cheap on a loaded machine.
const mgfLineEvery = 50 * time.Millisecond

// mgfFlow is a continuous, verifiable byte exchange over an echo: a
// writer sends numbered lines, each carrying a digest of its name and
// number, and a reader checks that the same lines come back, in order,
// none missing, none changed. finish half-closes the writing side and
// waits for the last line to come back, so that "no byte lost" is checked
// to the end.
type mgfFlow struct {
	name       string
	w          io.Writer
	closeWrite func() error // end of input (FIN, EOF on stdin)
	abort      func()       // tear everything down (close, kill)

	sent, got atomic.Int64 // lines
	gotBytes  atomic.Int64 // bytes of the lines that came back
	stop      chan struct{}
	stopOnce  sync.Once
	wrote     chan struct{} // closed when the writer has returned
	read      chan struct{} // closed when the reader has seen the end

	mu  sync.Mutex
	err error // the first error of either side
}

// mgfLine is line n of flow name.
func mgfLine(name string, n int64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", name, n))
	return fmt.Sprintf("%s %d %x\n", name, n, sum[:16])
}

// newMGFFlow starts a flow writing to w and reading the echo from r. The
// flow is stopped and torn down when the test ends.
func newMGFFlow(t *testing.T, name string, w io.Writer, r io.Reader, closeWrite func() error, abort func()) *mgfFlow {
	f := &mgfFlow{name: name, w: w, closeWrite: closeWrite, abort: abort,
		stop: make(chan struct{}), wrote: make(chan struct{}), read: make(chan struct{})}
	go f.write()
	go f.readEcho(r)
	t.Cleanup(func() {
		f.halt()
		f.abort()
		<-f.wrote
		<-f.read
	})
	return f
}

func (f *mgfFlow) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// Err returns the first error of the flow, or nil.
func (f *mgfFlow) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *mgfFlow) halt() { f.stopOnce.Do(func() { close(f.stop) }) }

func (f *mgfFlow) write() {
	defer close(f.wrote)
	tick := time.NewTicker(mgfLineEvery)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			if err := f.closeWrite(); err != nil {
				f.fail(fmt.Errorf("%s: ending the input after %d lines: %w", f.name, f.sent.Load(), err))
			}
			return
		case <-tick.C:
		}
		n := f.sent.Load() + 1
		if _, err := io.WriteString(f.w, mgfLine(f.name, n)); err != nil {
			f.fail(fmt.Errorf("%s: writing line %d: %w", f.name, n, err))
			return
		}
		f.sent.Store(n)
	}
}

func (f *mgfFlow) readEcho(r io.Reader) {
	defer close(f.read)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if !errors.Is(err, io.EOF) || line != "" {
				f.fail(fmt.Errorf("%s: reading the echo after %d lines (%q): %w", f.name, f.got.Load(), line, err))
			}
			break
		}
		n := f.got.Load() + 1
		if want := mgfLine(f.name, n); line != want {
			f.fail(fmt.Errorf("%s: echo line %d is %q; want %q (a byte lost or changed)", f.name, n, line, want))
			break
		}
		f.gotBytes.Add(int64(len(line)))
		f.got.Store(n)
	}
	// Keep draining, so that the other side never blocks on us.
	_, _ = io.Copy(io.Discard, br)
}

// advancing reports whether a line comes back within d (it returns as
// soon as one does: a loaded machine may pause a healthy flow, never for
// long).
func (f *mgfFlow) advancing(d time.Duration) bool {
	before := f.got.Load()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f.got.Load() > before {
			return true
		}
	}
	return f.got.Load() > before
}

// finish ends the input and waits up to timeout for every line sent to
// come back; it returns how many lines went through both ways, or why not
// all of them did.
func (f *mgfFlow) finish(timeout time.Duration) (int64, error) {
	f.halt()
	<-f.wrote
	select {
	case <-f.read:
	case <-time.After(timeout):
		return f.got.Load(), fmt.Errorf("%s: the echo did not end within %s of the end of input: %d lines sent, %d came back (error: %v)",
			f.name, timeout, f.sent.Load(), f.got.Load(), f.Err())
	}
	if err := f.Err(); err != nil {
		return f.got.Load(), err
	}
	if s, g := f.sent.Load(), f.got.Load(); s != g {
		return g, fmt.Errorf("%s: %d lines sent, %d came back", f.name, s, g)
	}
	return f.got.Load(), nil
}

// mgfTCPFlow runs a flow over a TCP connection to an echo service
// (through tunnel proxy db).
func mgfTCPFlow(t *testing.T, name, addr string) *mgfFlow {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, addr, err)
	}
	tc := c.(*net.TCPConn)
	return newMGFFlow(t, name, tc, tc, tc.CloseWrite, func() { tc.Close() })
}

// mgfProc is a client process (tunnel, ssh) started by the test, killed
// and reaped when it ends.
type mgfProc struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer // stderr, and stdout unless the caller took it
	done   chan struct{}
	code   int // exit code once done (-1: killed or not started)
	waited error
}

// mgfStart starts name args with env. If stdin is true the process's
// stdin and stdout are returned for the caller (a flow); otherwise stdout
// goes to the output buffer with stderr.
func mgfStart(t *testing.T, label string, env []string, stdin bool, name string, args ...string) (*mgfProc, io.WriteCloser, io.Reader) {
	t.Helper()
	p := &mgfProc{name: label, cmd: exec.Command(name, args...), out: &syncBuffer{}, done: make(chan struct{}), code: -1}
	p.cmd.Env = env
	p.cmd.Stderr = p.out
	var in io.WriteCloser
	var pr *io.PipeReader
	var pw *io.PipeWriter
	if stdin {
		var err error
		if in, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		// An io.Pipe rather than StdoutPipe: Wait waits for the copy to
		// the pipe, so the reader sees every byte before the EOF.
		pr, pw = io.Pipe()
		p.cmd.Stdout = pw
	} else {
		p.cmd.Stdout = p.out
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() {
		p.waited = p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case p.waited == nil:
			p.code = 0
		case errors.As(p.waited, &ee):
			p.code = ee.ExitCode()
		}
		if pw != nil {
			pw.Close()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	if !stdin {
		return p, nil, nil
	}
	return p, in, pr
}

// wait waits up to d for the process to exit and returns its exit code
// (-2 if it is still running).
func (p *mgfProc) wait(d time.Duration) int {
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		return -2
	}
}

func (p *mgfProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// mgfRetry calls try until it returns nil or timeout passes, and returns
// how long that took from since, or the last error.
func mgfRetry(since time.Time, timeout time.Duration, try func() error) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("still failing after %s: %w", timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// mgfEcho opens a new connection to addr and checks one round trip, with
// a per-attempt deadline long enough for a client that is moving to
// another gateway.
func mgfEcho(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := "new-connection\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg {
		return fmt.Errorf("echo = %q", got)
	}
	return nil
}

// mgfTail is the end of s, for error messages.
func mgfTail(s string) string {
	const n = 3000
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "[...]" + s[len(s)-n:]
	}
	return s
}

// TestMGFFlowDetectsLoss: the flow check of the fault tests fails when the
// echo drops a line or changes a byte, and passes on a faithful echo.
func TestMGFFlowDetectsLoss(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(n int, line string) string
		want   string
	}{
		{"faithful", func(_ int, line string) string { return line }, ""},
		{"dropped", func(n int, line string) string {
			if n == 3 {
				return ""
			}
			return line
		}, "a byte lost or changed"},
		{"changed", func(n int, line string) string {
			if n == 4 {
				return strings.Replace(line, " ", "_", 1)
			}
			return line
		}, "a byte lost or changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An echo service that mangles what it sends back.
			srv := serve(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for n := 1; ; n++ {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, tc.mangle(n, line)); err != nil {
						return
					}
				}
			})
			f := mgfTCPFlow(t, "check", srv.addr())
			if !f.advancing(10 * time.Second) {
				t.Fatal("the flow did not start")
			}
			for f.sent.Load() < 6 {
				time.Sleep(mgfLineEvery)
			}
			_, err := f.finish(10 * time.Second)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("a faithful echo: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("an echo that %s a line: %v; want an error saying %q", tc.name, err, tc.want)
			}
		})
	}
}
