package agentload

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// An agent is counted once per epoch however often it connects, and
// again in the next epoch, with the time of its first connection there.
func TestTrackerEpochs(t *testing.T) {
	tr := NewTracker(2)
	start := time.Now()
	tr.Connected(0, start)
	tr.Connected(0, start.Add(time.Second))
	if got := tr.ConnectedNow(); got != 1 {
		t.Fatalf("ConnectedNow() = %d after agent 0 connected twice; want 1", got)
	}
	tr.Connected(1, start)
	tr.Connected(7, start) // out of range: ignored
	if got := tr.ConnectedNow(); got != 2 {
		t.Fatalf("ConnectedNow() = %d; want 2", got)
	}
	tr.NewEpoch()
	if got := tr.ConnectedNow(); got != 0 {
		t.Fatalf("ConnectedNow() = %d in a new epoch; want 0", got)
	}
	if got := tr.ConnectTimes(start); len(got) != 0 {
		t.Fatalf("ConnectTimes = %v in a new epoch; want none", got)
	}
	tr.Connected(1, start.Add(3*time.Second))
	tr.Connected(1, start.Add(5*time.Second))
	if got := tr.ConnectedNow(); got != 1 {
		t.Fatalf("ConnectedNow() = %d after agent 1 reconnected; want 1", got)
	}
	if got := tr.ConnectTimes(start); len(got) != 1 || got[0] != 3*time.Second {
		t.Fatalf("ConnectTimes = %v; want [3s]", got)
	}
	if got := tr.Connections(); got != 5 {
		t.Fatalf("Connections() = %d; want 5", got)
	}
	if idx, n := tr.Missing(10); n != 1 || len(idx) != 1 || idx[0] != 0 {
		t.Fatalf("Missing = %v, %d; want agent 0 alone", idx, n)
	}
	if got := tr.ConnectionsOf(0); got != 2 {
		t.Fatalf("ConnectionsOf(0) = %d; want 2", got)
	}
	tr.NewEpoch()
	if idx, n := tr.Missing(1); n != 2 || len(idx) != 1 || idx[0] != 0 {
		t.Fatalf("Missing(1) = %v, %d; want [0] of 2", idx, n)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    int
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("Percentile(1..100 ms, %d) = %s; want %s", c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %s; want 0", got)
	}
}

// The agents' warnings reach the Reporter keyed by message and reason;
// lower levels are dropped.
func TestWarnHandler(t *testing.T) {
	tr := NewTracker(1)
	log := slog.New(&warnHandler{r: tr}).With("gateway", "g:1")
	log.Info("connected to the gateway")
	log.Warn("disconnected from the gateway; reconnecting", "reason", "received a stateless reset")
	log.Warn("disconnected from the gateway; reconnecting", "reason", "received a stateless reset")
	log.Warn("disconnected from the gateway; reconnecting", "reason", "idle timeout")
	got := tr.Warnings()
	want := map[string]int{
		"disconnected from the gateway; reconnecting (reason: received a stateless reset)": 2,
		"disconnected from the gateway; reconnecting (reason: idle timeout)":               1,
	}
	if len(got) != len(want) {
		t.Fatalf("warnings = %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("warnings[%q] = %d; want %d (all: %v)", k, got[k], v, got)
		}
	}
	tr.ResetWarnings()
	if got := tr.Warnings(); len(got) != 0 {
		t.Errorf("after ResetWarnings: %v; want none", got)
	}
}

// What a shard writes, the test reads back: connections with their
// times, failures and warnings, tabs and newlines flattened.
func TestEventsRoundTrip(t *testing.T) {
	var buf strings.Builder
	w := NewEventWriter(&buf)
	at := time.Unix(1700000000, 123456789)
	w.Connected(1, at)
	w.Failed(0, errors.New("enrolment refused:\tbad\ntoken"))
	w.Warned("disconnected (reason: x\ty)")
	tr := NewTracker(2)
	if err := ReadEvents(strings.NewReader(buf.String()), tr); err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	if got := tr.ConnectTimes(at); len(got) != 1 || got[0] != 0 {
		t.Errorf("ConnectTimes = %v; want [0s] (the time written)", got)
	}
	if errs := tr.Errors(); len(errs) != 1 || errs[0].Error() != "enrolment refused: bad token" {
		t.Errorf("Errors() = %v; want [enrolment refused: bad token]", errs)
	}
	if w := tr.Warnings(); w["disconnected (reason: x y)"] != 1 {
		t.Errorf("Warnings() = %v", w)
	}
	if err := ReadEvents(strings.NewReader("X\t1\n"), tr); err == nil || !strings.Contains(err.Error(), "bad event line") {
		t.Errorf("ReadEvents(garbage) = %v; want a bad event line error", err)
	}
}
