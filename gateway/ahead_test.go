package gateway

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/relay"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// streamEvents counts the stream events of the audit log: decided when a
// client came, decided ahead, and decided ahead but never used.
type streamEvents struct{ now, ahead, unused int }

func countStreamEvents(t *testing.T, st store.Store) streamEvents {
	t.Helper()
	evs, err := st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var c streamEvents
	for _, ev := range evs {
		switch {
		case ev.Type == audit.StreamAllowed && ev.Details["ahead"] == "true":
			c.ahead++
		case ev.Type == audit.StreamAllowed:
			c.now++
		case ev.Type == audit.StreamUnused:
			c.unused++
		}
	}
	return c
}

func waitStreamEvents(t *testing.T, st store.Store, what string, ok func(streamEvents) bool) streamEvents {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := countStreamEvents(t, st)
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the audit log has %+v", what, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectAhead: after a direct stream, the app agent holds a grant for
// the target's next stream, decided and audited ahead; the next client
// connection uses it (no new decision when it comes), and asks for the
// one after. A grant held is cut with its agent's streams, audited as
// unused, and never serves a connection afterwards.
func TestDirectAhead(t *testing.T) {
	tn := startTunnel(t, func(c net.Conn) { io.Copy(c, c) })
	defer tn.stop(t)
	st := tn.g.store

	held := waitStreamEvents(t, st, "a grant decided ahead after the first streams", func(c streamEvents) bool { return c.ahead >= 1 })
	// A grant held is no stream in the metrics nor in `agents ls`: once
	// the first streams ended, none is active.
	deadline := time.Now().Add(20 * time.Second)
	for directActive(tn.g) != 0 || tn.g.relay.Online()["app-1"].DirectStreams != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("with only a grant held, the metrics count %d direct streams active, agents ls %d for app-1",
				directActive(tn.g), tn.g.relay.Online()["app-1"].DirectStreams)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := roundTrip(tn.Local); err != nil {
		t.Fatalf("a connection served under a grant decided ahead: %v", err)
	}
	after := waitStreamEvents(t, st, "the next grant asked for", func(c streamEvents) bool { return c.ahead == held.ahead+1 })
	if after.now != held.now || after.unused != held.unused {
		t.Fatalf("the connection was decided when it came (%+v before, %+v after): the grant held was not used", held, after)
	}

	// The app agent's streams are cut (as by a lock or a revocation): the
	// grant it holds goes with them.
	tn.g.relay.EndAgent("app-1", "test: agent cut")
	cut := waitStreamEvents(t, st, "the grant held audited as unused", func(c streamEvents) bool { return c.unused == after.unused+1 })
	// The agent reconnects; its next connection is decided when it comes.
	deadline = time.Now().Add(20 * time.Second)
	for roundTrip(tn.Local) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no round trip after the agent reconnected")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c := countStreamEvents(t, st); c.now <= cut.now {
		t.Fatalf("after the cut, a connection went through without a decision (%+v before, %+v after)", cut, c)
	}
}

// directActive is the direct streams the gateway's metrics count as active.
func directActive(g *Gateway) int {
	for _, s := range g.relay.StreamStats() {
		if s.Path == relay.PathDirect {
			return s.Active
		}
	}
	return -1
}
