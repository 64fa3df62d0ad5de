package transport

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// An endKind makes an endpoint to splice and, connected to it over a real
// socket, the far end the test drives.
type endKind struct {
	name string
	ends func(t *testing.T) (inner, outer Endpoint)
	// buffered bounds the bytes that can sit between outer and inner when
	// nobody reads: flow-control windows and kernel socket buffers.
	buffered func() int64
}

var endKinds = []endKind{
	{
		name: "tcp",
		ends: func(t *testing.T) (Endpoint, Endpoint) {
			c, s := tcpConns(t)
			return TCP{s}, TCP{c}
		},
		buffered: kernelTCPBuffers,
	},
	{
		name: "quic",
		ends: func(t *testing.T) (Endpoint, Endpoint) {
			o, a := quicStreams(t)
			return Stream{o}, Stream{a}
		},
		buffered: func() int64 {
			// The receiver's stream window, plus what one Write may hold.
			return int64(QUICConfig().MaxStreamReceiveWindow) + 1<<20
		},
	},
}

// kernelTCPBuffers is the most a loopback TCP connection buffers one way:
// the sender's send buffer and the receiver's receive buffer, at their
// autotuning maximum.
func kernelTCPBuffers() int64 {
	var total int64
	for _, f := range []string{"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/ipv4/tcp_wmem"} {
		v := int64(32 << 20) // unknown: assume a lot
		if b, err := os.ReadFile(f); err == nil {
			if fs := strings.Fields(string(b)); len(fs) == 3 {
				if n, err := strconv.ParseInt(fs[2], 10, 64); err == nil {
					v = n
				}
			}
		}
		total += v
	}
	return total
}

// forEachPair runs f for every combination of endpoint kinds: a side A and
// a side B, each an inner endpoint (spliced) and an outer one (driven).
func forEachPair(t *testing.T, f func(t *testing.T, a, b endKind, aIn, aOut, bIn, bOut Endpoint)) {
	for _, a := range endKinds {
		for _, b := range endKinds {
			t.Run(a.name+"-"+b.name, func(t *testing.T) {
				aIn, aOut := a.ends(t)
				bIn, bOut := b.ends(t)
				f(t, a, b, aIn, aOut, bIn, bOut)
			})
		}
	}
}

// startSplice runs Splice(a, b) and returns its result. At the end of the
// test the endpoints are aborted and the splice waited for, so a failed
// test leaks nothing.
func startSplice(t *testing.T, a, b Endpoint) <-chan Result {
	ch := make(chan Result, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ch <- Splice(a, b)
	}()
	t.Cleanup(func() {
		a.Abort()
		b.Abort()
		<-done
	})
	return ch
}

func waitResult(t *testing.T, ch <-chan Result) Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("Splice did not return")
		return Result{}
	}
}

// isReset reports whether err is how a reset shows: a TCP RST or a QUIC
// stream error, never a clean end.
func isReset(err error) bool {
	var se *quic.StreamError
	return err != nil && !errors.Is(err, io.EOF) &&
		(errors.Is(err, syscall.ECONNRESET) || errors.As(err, &se))
}

// readReset reads from e until an error, which must be a reset; it fails
// the test on a clean end.
func readReset(t *testing.T, who string, e Endpoint) {
	t.Helper()
	got, err := io.ReadAll(e)
	if !isReset(err) {
		t.Errorf("%s: read %q, then %v; want a reset (ECONNRESET or *quic.StreamError), never io.EOF", who, got, err)
	}
}

// send writes n pseudo-random bytes from seed, then half-closes, and
// returns their hash.
func send(w Endpoint, n int64, seed byte, written *atomic.Int64) ([]byte, error) {
	src := io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			m, err := w.Write(buf[:k])
			if written != nil {
				written.Add(int64(m))
			}
			if err != nil {
				return nil, err
			}
		}
		if rerr == io.EOF {
			return h.Sum(nil), w.CloseWrite()
		}
	}
}

// recv reads r to its end and returns the hash and count of what came.
func recv(r io.Reader) ([]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return h.Sum(nil), n, err
}

type transfer struct {
	sum []byte
	n   int64
	err error
}

func goSend(w Endpoint, n int64, seed byte, written *atomic.Int64) <-chan transfer {
	ch := make(chan transfer, 1)
	go func() {
		sum, err := send(w, n, seed, written)
		ch <- transfer{sum, n, err}
	}()
	return ch
}

func goRecv(r io.Reader) <-chan transfer {
	ch := make(chan transfer, 1)
	go func() {
		sum, n, err := recv(r)
		ch <- transfer{sum, n, err}
	}()
	return ch
}

func checkTransfer(t *testing.T, dir string, sent, got transfer) {
	t.Helper()
	if sent.err != nil {
		t.Errorf("%s: send: %v", dir, sent.err)
	}
	if got.err != nil {
		t.Errorf("%s: receive: %v", dir, got.err)
	}
	if got.n != sent.n || !bytes.Equal(got.sum, sent.sum) {
		t.Errorf("%s: received %d bytes, sha256 %x; want %d bytes, sha256 %x", dir, got.n, got.sum, sent.n, sent.sum)
	}
}

func TestSpliceBulk(t *testing.T) {
	const n = 6 << 20
	forEachPair(t, func(t *testing.T, _, _ endKind, aIn, aOut, bIn, bOut Endpoint) {
		res := startSplice(t, aIn, bIn)
		// Both directions at once, each ended by a half-close.
		aSent, bSent := goSend(aOut, n, 1, nil), goSend(bOut, n+1, 2, nil)
		aGot, bGot := goRecv(aOut), goRecv(bOut)
		checkTransfer(t, "A to B", <-aSent, <-bGot)
		checkTransfer(t, "B to A", <-bSent, <-aGot)
		r := waitResult(t, res)
		if r.Err != nil {
			t.Errorf("Result.Err = %v; want nil", r.Err)
		}
		if r.AToB != n || r.BToA != n+1 {
			t.Errorf("Result = %d A to B, %d B to A; want %d, %d", r.AToB, r.BToA, n, n+1)
		}
	})
}

func TestSpliceHalfClose(t *testing.T) {
	forEachPair(t, func(t *testing.T, _, _ endKind, aIn, aOut, bIn, bOut Endpoint) {
		res := startSplice(t, aIn, bIn)
		const req, resp = "request, then FIN", "response after the FIN"
		if _, err := aOut.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if err := aOut.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		// B sees A's data, then a clean end...
		got, err := io.ReadAll(bOut)
		if err != nil || string(got) != req {
			t.Fatalf("B read %q, %v; want %q, nil", got, err, req)
		}
		// ...and can still answer, and A receives all of it.
		if _, err := bOut.Write([]byte(resp)); err != nil {
			t.Fatalf("B writes after reading EOF: %v", err)
		}
		if err := bOut.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(aOut)
		if err != nil || string(got) != resp {
			t.Fatalf("A read %q, %v; want %q, nil", got, err, resp)
		}
		r := waitResult(t, res)
		want := Result{AToB: int64(len(req)), BToA: int64(len(resp))}
		if r != want {
			t.Errorf("Result = %+v; want %+v", r, want)
		}
	})
}

// ping checks that the splice carries a byte each way.
func ping(t *testing.T, aOut, bOut Endpoint) {
	t.Helper()
	for _, p := range []struct {
		dir      string
		from, to Endpoint
	}{{"A to B", aOut, bOut}, {"B to A", bOut, aOut}} {
		if _, err := p.from.Write([]byte{'!'}); err != nil {
			t.Fatalf("%s: %v", p.dir, err)
		}
		if _, err := io.ReadFull(p.to, make([]byte, 1)); err != nil {
			t.Fatalf("%s: %v", p.dir, err)
		}
	}
}

func TestSpliceReset(t *testing.T) {
	for _, side := range []string{"A", "B"} {
		t.Run(side+" aborts", func(t *testing.T) {
			forEachPair(t, func(t *testing.T, _, _ endKind, aIn, aOut, bIn, bOut Endpoint) {
				res := startSplice(t, aIn, bIn)
				ping(t, aOut, bOut)
				aborter, far := aOut, bOut
				if side == "B" {
					aborter, far = bOut, aOut
				}
				aborter.Abort() // TCP: linger 0 and close; QUIC: RESET_STREAM and STOP_SENDING
				readReset(t, "far end", far)
				if r := waitResult(t, res); !isReset(r.Err) {
					t.Errorf("Result.Err = %v; want the reset", r.Err)
				}
			})
		})
	}
}

// failRead passes Read through until data arrives, then fails instead of
// delivering it.
type failRead struct {
	Endpoint
	err error
}

func (f failRead) Read(p []byte) (int, error) {
	if _, err := f.Endpoint.Read(p); err != nil {
		return 0, err
	}
	return 0, f.err
}

// An error in one direction aborts both: each peer sees a reset, even the
// one whose direction was healthy.
func TestSpliceErrorAbortsBoth(t *testing.T) {
	errBoom := errors.New("boom")
	forEachPair(t, func(t *testing.T, _, _ endKind, aIn, aOut, bIn, bOut Endpoint) {
		res := startSplice(t, aIn, failRead{bIn, errBoom})
		// A to B works...
		if _, err := aOut.Write([]byte("fine")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(bOut, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		// ...until B to A fails.
		if _, err := bOut.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		readReset(t, "A", aOut)
		readReset(t, "B", bOut)
		if r := waitResult(t, res); !errors.Is(r.Err, errBoom) {
			t.Errorf("Result.Err = %v; want %v", r.Err, errBoom)
		}
	})
}

// A QUIC peer that stops reading (STOP_SENDING) fails the direction
// towards it, and the splice aborts the other side.
func TestSpliceStopSending(t *testing.T) {
	for _, a := range endKinds {
		t.Run(a.name+"-quic", func(t *testing.T) {
			aIn, aOut := a.ends(t)
			o, acc := quicStreams(t)
			res := startSplice(t, aIn, Stream{o})
			ping(t, aOut, Stream{acc})
			acc.CancelRead(StreamCanceled)
			// A writes until the abort reaches it.
			var werr error
			for i := 0; werr == nil && i < 1<<14; i++ {
				_, werr = aOut.Write(make([]byte, 4<<10))
			}
			if werr == nil {
				t.Fatal("A wrote 64 MiB into a stream whose reader stopped; want an error")
			}
			r := waitResult(t, res)
			var se *quic.StreamError
			if !errors.As(r.Err, &se) || se.ErrorCode != StreamCanceled || !se.Remote {
				t.Errorf("Result.Err = %v; want the peer's STOP_SENDING (code %d)", r.Err, StreamCanceled)
			}
		})
	}
}

// A reader that does not read holds the writer back: the bytes accepted
// from the writer stay within the flow-control windows and socket buffers
// between the two, and the splice itself holds no more than a buffer.
func TestSpliceBackPressure(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB or more")
	}
	forEachPair(t, func(t *testing.T, a, b endKind, aIn, aOut, bIn, bOut Endpoint) {
		bound := a.buffered() + b.buffered() + bufSize + 1<<20
		total := max(int64(64<<20), 2*bound)
		res := startSplice(t, aIn, bIn)
		var written atomic.Int64
		sent := goSend(aOut, total, 3, &written)

		// Wait until the writer stalls: no progress for half a second. A
		// slow machine may stall early, which only makes the check easier.
		last, still := int64(-1), 0
		for deadline := time.Now().Add(30 * time.Second); still < 5 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			if n := written.Load(); n == last {
				still++
			} else {
				last, still = n, 0
			}
		}
		n := written.Load()
		t.Logf("writer stalled after %d of %d bytes (bound %d)", n, total, bound)
		if n > bound {
			t.Errorf("the writer got %d bytes out while nobody read; want at most %d (windows and socket buffers)", n, bound)
		}
		if n == 0 {
			t.Errorf("the writer got nothing out; want the splice to carry bytes up to the windows")
		}

		// Reading now releases the writer, and every byte arrives.
		got := <-goRecv(bOut)
		checkTransfer(t, "A to B", <-sent, got)
		if err := bOut.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, aOut); err != nil {
			t.Fatal(err)
		}
		if r := waitResult(t, res); r.Err != nil || r.AToB != total {
			t.Errorf("Result = %+v; want %d bytes A to B, no error", r, total)
		}
	})
}

// panicky is an endpoint whose Read panics.
type panicky struct{ Endpoint }

func (panicky) Read([]byte) (int, error) { panic("endpoint bug") }

// TestSplicePanicInItsGoroutineAbortsOne: a panic in the direction Splice
// runs in its own goroutine (reading a) resets both sides and returns,
// instead of ending the process.
func TestSplicePanicInItsGoroutineAbortsOne(t *testing.T) {
	aIn, _ := endKinds[0].ends(t)
	bIn, bOut := endKinds[0].ends(t)
	res := startSplice(t, panicky{aIn}, bIn)
	readReset(t, "B", bOut)
	if r := waitResult(t, res); r.Err == nil {
		t.Error("Splice after a panic reported no error")
	}
}
