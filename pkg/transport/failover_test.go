package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// A Forwarder over a Failover carries the local client through the second
// gateway when the first is not connected or its connection is dead, and
// keeps using the gateway that worked; the client is reset only when no
// gateway can take the stream.
func TestFailoverCarriesThroughTheNextGateway(t *testing.T) {
	cc1, sc1 := quicConns(t)
	cc2, sc2 := quicConns(t)
	gw1 := startGateway(t, sc1, wire.Reply{Status: wire.StatusOK}, "")
	gw2 := startGateway(t, sc2, wire.Reply{Status: wire.StatusOK}, "")
	o1 := &fakeOpener{conn: cc1}
	o2 := &fakeOpener{conn: cc2}
	f := &Failover{Openers: []StreamOpener{o1, o2}}
	ft := startForwarder(t, f, nil)

	// Both up: the first carries.
	echo(t, ft.dial(t), "through the first")
	if len(gw1.seen()) != 1 || len(gw2.seen()) != 0 {
		t.Fatalf("gateways saw %d and %d streams; want 1 and 0", len(gw1.seen()), len(gw2.seen()))
	}

	// The first gateway's connection dies: the next connection goes
	// through the second, not reset.
	cc1.CloseWithError(CodeShutdown, "gateway 1 went away")
	echo(t, ft.dial(t), "through the second")
	if len(gw2.seen()) != 1 {
		t.Fatalf("the second gateway saw %d streams; want 1", len(gw2.seen()))
	}
	// And it stays there: the first is not tried again first.
	before := o1.calls.Load()
	echo(t, ft.dial(t), "still the second")
	if o1.calls.Load() != before || len(gw2.seen()) != 2 {
		t.Errorf("after the failover the dead gateway was tried %d more times and the second saw %d streams; want 0 and 2",
			o1.calls.Load()-before, len(gw2.seen()))
	}

	// No gateway at all: the client is reset.
	cc2.CloseWithError(CodeShutdown, "gateway 2 went away")
	ft.dialReset(t)
}

// OpenStream tries every opener once, says "not connected" when none is,
// and stops at once when the caller gives up.
func TestFailoverErrors(t *testing.T) {
	nc1 := &fakeOpener{err: ErrNotConnected}
	nc2 := &fakeOpener{err: fmt.Errorf("gateway b: %w", ErrNotConnected)}
	f := &Failover{Openers: []StreamOpener{nc1, nc2}}
	if _, err := f.OpenStream(context.Background()); !errors.Is(err, ErrNotConnected) || err != ErrNotConnected {
		t.Errorf("all not connected: err = %v; want ErrNotConnected itself", err)
	}
	if nc1.calls.Load() != 1 || nc2.calls.Load() != 1 {
		t.Errorf("calls = %d, %d; want each tried once", nc1.calls.Load(), nc2.calls.Load())
	}

	dead := &fakeOpener{err: errors.New("connect to the gateway at a:8443: timeout")}
	f = &Failover{Openers: []StreamOpener{dead, nc1}}
	_, err := f.OpenStream(context.Background())
	if err == nil || !strings.Contains(err.Error(), "a:8443: timeout") || !errors.Is(err, ErrNotConnected) {
		t.Errorf("mixed failures: err = %v; want both reasons", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	first := &fakeOpener{err: context.Canceled}
	second := &fakeOpener{err: ErrNotConnected}
	f = &Failover{Openers: []StreamOpener{first, second}}
	if _, err := f.OpenStream(ctx); !errors.Is(err, context.Canceled) || second.calls.Load() != 0 {
		t.Errorf("caller gone: err = %v, next opener tried %d times; want context.Canceled and 0", err, second.calls.Load())
	}

	if _, err := (&Failover{}).OpenStream(context.Background()); err != ErrNotConnected {
		t.Errorf("no openers: err = %v; want ErrNotConnected", err)
	}
}

// hangingOpener blocks until its context ends, like a dial to a gateway
// that died without a word.
type hangingOpener struct{ calls atomic.Int32 }

func (o *hangingOpener) OpenStream(ctx context.Context) (*quic.Stream, error) {
	o.calls.Add(1)
	<-ctx.Done()
	return nil, fmt.Errorf("connect to the gateway at a:8443: %w", ctx.Err())
}

// Under the forwarder's deadline, an opener that hangs does not use up the
// whole of it: the next one still gets its turn, and then keeps the
// traffic.
func TestFailoverPastAHangingOpener(t *testing.T) {
	cc, sc := quicConns(t)
	gw := startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	hang := &hangingOpener{}
	f := &Failover{Openers: []StreamOpener{hang, &fakeOpener{conn: cc}}}
	ft := startForwarder(t, f, nil)
	echo(t, ft.dial(t), "past the hanging one")
	echo(t, ft.dial(t), "straight to the second")
	if hang.calls.Load() != 1 || len(gw.seen()) != 2 {
		t.Errorf("the hanging opener was called %d times and the second gateway saw %d streams; want 1 and 2", hang.calls.Load(), len(gw.seen()))
	}
}

// InOrder goes back to the first opener as soon as it can open again.
func TestFailoverInOrderGoesBack(t *testing.T) {
	cc1, sc1 := quicConns(t)
	cc2, sc2 := quicConns(t)
	gw1 := startGateway(t, sc1, wire.Reply{Status: wire.StatusOK}, "")
	gw2 := startGateway(t, sc2, wire.Reply{Status: wire.StatusOK}, "")
	o1 := &switchOpener{o: &fakeOpener{conn: cc1}}
	o1.down.Store(true)
	f := &Failover{Openers: []StreamOpener{o1, &fakeOpener{conn: cc2}}, InOrder: true}
	ft := startForwarder(t, f, nil)
	echo(t, ft.dial(t), "first down")
	o1.down.Store(false) // back
	echo(t, ft.dial(t), "first back")
	if len(gw1.seen()) != 1 || len(gw2.seen()) != 1 {
		t.Errorf("gateways saw %d and %d streams; want 1 and 1", len(gw1.seen()), len(gw2.seen()))
	}
}

// switchOpener is not connected while down is set.
type switchOpener struct {
	o    StreamOpener
	down atomic.Bool
}

func (s *switchOpener) OpenStream(ctx context.Context) (*quic.Stream, error) {
	if s.down.Load() {
		return nil, ErrNotConnected
	}
	return s.o.OpenStream(ctx)
}

// Without any deadline, an opener that hangs (a gateway that died without
// a word) gets the next one tried beside it after HedgeAfter; the
// hanging one is then cancelled, and the stream that won is the next
// one's.
func TestFailoverHedgesAHangingOpener(t *testing.T) {
	cc, sc := quicConns(t)
	startGateway(t, sc, wire.Reply{Status: wire.StatusOK}, "")
	hang := &hangingOpener{}
	next := &fakeOpener{conn: cc}
	f := &Failover{Openers: []StreamOpener{hang, next}, HedgeAfter: 20 * time.Millisecond}
	s, err := f.OpenStream(context.Background())
	if err != nil {
		t.Fatalf("OpenStream with the first opener hanging: %v", err)
	}
	s.CancelWrite(StreamCanceled)
	if hang.calls.Load() != 1 || next.calls.Load() != 1 {
		t.Errorf("calls = %d, %d; want each once", hang.calls.Load(), next.calls.Load())
	}
}

// quietOpener is a fakeOpener that says whether its gateway is quiet.
type quietOpener struct {
	fakeOpener
	quiet atomic.Bool
}

func (q *quietOpener) Quiet() bool { return q.quiet.Load() }

// A quiet opener (its gateway silent for a while: maybe dead) is tried
// after the others, in order and hedged, even when it is first or opened
// the last stream; when every opener is quiet, the usual order holds.
func TestFailoverTriesQuietOpenersLast(t *testing.T) {
	cc1, sc1 := quicConns(t)
	cc2, sc2 := quicConns(t)
	gw1 := startGateway(t, sc1, wire.Reply{Status: wire.StatusOK}, "")
	gw2 := startGateway(t, sc2, wire.Reply{Status: wire.StatusOK}, "")
	for _, tt := range []struct {
		inOrder      bool
		want1, want2 int
	}{
		// Both quiet: in order, the first again; hedged, the one that
		// opened the last stream (the second).
		{true, 2, 1},
		{false, 1, 2},
	} {
		o1 := &quietOpener{fakeOpener: fakeOpener{conn: cc1}}
		o2 := &quietOpener{fakeOpener: fakeOpener{conn: cc2}}
		f := &Failover{Openers: []StreamOpener{o1, o2}, InOrder: tt.inOrder}
		ft := startForwarder(t, f, nil)
		seen1, seen2 := len(gw1.seen()), len(gw2.seen())
		echo(t, ft.dial(t), "both heard")
		if len(gw1.seen())-seen1 != 1 {
			t.Fatalf("in order %v: with both gateways heard, the first did not carry", tt.inOrder)
		}
		o1.quiet.Store(true)
		echo(t, ft.dial(t), "the first quiet")
		if len(gw2.seen())-seen2 != 1 {
			t.Fatalf("in order %v: with the first gateway quiet, the second did not carry", tt.inOrder)
		}
		o2.quiet.Store(true)
		echo(t, ft.dial(t), "both quiet")
		if got1, got2 := len(gw1.seen())-seen1, len(gw2.seen())-seen2; got1 != tt.want1 || got2 != tt.want2 {
			t.Errorf("in order %v: the gateways saw %d and %d streams; want %d and %d", tt.inOrder, got1, got2, tt.want1, tt.want2)
		}
	}
}
