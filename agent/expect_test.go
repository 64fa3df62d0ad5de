package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestCutTicket: a cut reaches a stream served, refuses one announced but
// not arrived (and one not committed yet), and leaves no trace for a
// ticket this agent does not know: gateways send one at the end of every
// direct stream's lease, so remembering them would grow with the traffic.
func TestCutTicket(t *testing.T) {
	e := newExpected()
	e.setWait(200 * time.Millisecond)
	announce := func(ticket string) {
		e.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: "tunnel://test/agent/app-1", Service: "echo"}, nil)
	}

	// Served: reset with the gateway's code.
	announce("served")
	x, err := e.take(context.Background(), "served")
	if err != nil {
		t.Fatal(err)
	}
	var got quic.StreamErrorCode
	release, ok := e.serving("served", x, func(c quic.StreamErrorCode) { got = c })
	if !ok {
		t.Fatal("serving refused a fresh ticket")
	}
	e.cutTicket("served", transport.StreamRevoked)
	if got != transport.StreamRevoked {
		t.Errorf("the stream served was reset with %d; want %d", got, transport.StreamRevoked)
	}
	release()

	// Announced, not arrived: refused when it comes.
	announce("pending")
	e.cutTicket("pending", transport.StreamCanceled)
	if _, err := e.take(context.Background(), "pending"); !errors.Is(err, errCut) {
		t.Errorf("a stream cut before it came: %v; want %v", err, errCut)
	}

	// Taken but its audit event not committed: the commit never comes.
	announce("uncommitted")
	x, err = e.take(context.Background(), "uncommitted")
	if err != nil {
		t.Fatal(err)
	}
	e.cutTicket("uncommitted", transport.StreamCanceled)
	e.commit("uncommitted")
	select {
	case <-x.committed:
		t.Error("a stream cut before its commit was told its audit event is durable")
	default:
	}

	// Unknown (the stream over and forgotten): nothing is kept.
	before := len(e.cut)
	for i := range 100 {
		e.cutTicket(wire.NewTicket()+string(rune('a'+i%26)), transport.StreamCanceled)
	}
	if n := len(e.cut) - before; n != 0 {
		t.Errorf("%d cuts of unknown tickets kept; want none", n)
	}
}

// TestAheadTTLs: an agent gives up a grant decided ahead before a gateway
// voids it, and a gateway voids it before the target forgets it.
func TestAheadTTLs(t *testing.T) {
	if !(aheadTTL < wire.AheadHold && wire.AheadHold < expectTTL) {
		t.Errorf("aheadTTL %v, wire.AheadHold %v, expectTTL %v: want them in increasing order", aheadTTL, wire.AheadHold, expectTTL)
	}
}

// TestReportTicket: a gateway whose lease of a stream was lost asks the
// target to report it: one served is returned (to be adopted), one
// announced but not begun is void.
func TestReportTicket(t *testing.T) {
	e := newExpected()
	e.setWait(200 * time.Millisecond)
	announce := func(ticket string) {
		e.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: "tunnel://test/agent/app-1", Serial: "01", Service: "echo"}, nil)
	}
	announce("served")
	x, err := e.take(context.Background(), "served")
	if err != nil {
		t.Fatal(err)
	}
	release, _ := e.serving("served", x, func(quic.StreamErrorCode) {})
	defer release()
	if got, ok := e.report("served"); !ok || got.caller != "tunnel://test/agent/app-1" || got.serial != "01" || got.service != "echo" {
		t.Errorf("report of a stream served: %+v, %v; want it, with its caller, serial and service", got, ok)
	}
	announce("pending")
	if _, ok := e.report("pending"); ok {
		t.Error("report of a stream not begun says it is served")
	}
	if _, err := e.take(context.Background(), "pending"); !errors.Is(err, errCut) {
		t.Errorf("a stream announced, then reported lost before it came: %v; want %v", err, errCut)
	}
	if _, ok := e.report("unknown"); ok || len(e.cut) != 1 {
		t.Errorf("report of an unknown ticket: %v, %d cuts kept; want false and only the pending one's", ok, len(e.cut))
	}
}
