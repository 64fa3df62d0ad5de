package auditlog

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recorder is an Appender that keeps what it is given.
type recorder struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (r *recorder) Append(ev audit.Event) <-chan error {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	c := make(chan error, 1)
	c <- nil
	return c
}

func (r *recorder) take() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func denied(src, reason string) audit.Event {
	return audit.Event{Type: audit.AgentDenied, Actor: "anonymous", Outcome: audit.Failure, SourceIP: src, Reason: reason,
		Details: map[string]string{"request": "POST /v1/agents/renew"}}
}

// summary is the part of an event a test compares.
type summary struct {
	Type                     audit.Type
	Source, Reason, Subject  string
	Count, FirstSeen, LastAt string
	Time                     time.Time
}

func summarise(evs []audit.Event) []summary {
	var out []summary
	for _, e := range evs {
		out = append(out, summary{Type: e.Type, Source: e.SourceIP, Reason: e.Reason, Subject: e.Subject,
			Count: e.Details[DetailCount], FirstSeen: e.Details[DetailFirstSeen], LastAt: e.Details[DetailLastSeen], Time: e.Time})
	}
	return out
}

func newFolder(t *testing.T) (*Folder, *recorder, *fakeClock) {
	clock := &fakeClock{t: t0}
	rec := &recorder{}
	f := NewFolder(rec, time.Minute, clock.Now, nil)
	t.Cleanup(func() { f.Close() })
	return f, rec, clock
}

func TestFolderWritesTheFirstAtOnceAndFoldsRepeats(t *testing.T) {
	f, rec, clock := newFolder(t)
	done, folded := f.Record(denied("192.0.2.1", "no certificate"))
	if folded || <-done != nil {
		t.Fatalf("first refusal: folded %v; want written at once", folded)
	}
	if got := len(rec.take()); got != 1 {
		t.Fatalf("%d events written for the first refusal; want 1", got)
	}
	for i := range 1000 {
		clock.Advance(10 * time.Millisecond)
		ev := denied("192.0.2.1", "no certificate")
		ev.Subject = fmt.Sprint("serial-", i%2)
		if _, folded := f.Record(ev); !folded {
			t.Fatalf("repeat %d written at once; want folded", i)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if evs := rec.take(); len(evs) != 0 {
		t.Fatalf("Flush before the interval ended wrote %v; want nothing", summarise(evs))
	}
	clock.Advance(time.Minute - 10*time.Second) // past t0+1m
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	end := t0.Add(10*time.Second + time.Minute - 10*time.Second)
	want := []summary{{Type: audit.AgentDenied, Source: "192.0.2.1", Reason: "no certificate", Subject: "",
		Count: "1000", FirstSeen: t0.Add(10 * time.Millisecond).Format(time.RFC3339Nano),
		LastAt: t0.Add(10 * time.Second).Format(time.RFC3339Nano), Time: end}}
	evs := rec.take()
	if diff := cmp.Diff(want, summarise(evs)); diff != "" {
		t.Fatalf("folded events (-want +got):\n%s", diff)
	}
	if evs[0].Details["request"] != "POST /v1/agents/renew" || evs[0].Outcome != audit.Failure {
		t.Errorf("folded event %+v lost the refusal's details or outcome", evs[0])
	}
}

// TestFolderOneEventPerIntervalWhileRepeatsGoOn: a steady stream of
// refusals costs one event per interval; a quiet interval starts over.
func TestFolderOneEventPerIntervalWhileRepeatsGoOn(t *testing.T) {
	f, rec, clock := newFolder(t)
	var counts []string
	for range 5 * 60 { // five minutes, one refusal a second
		f.Record(denied("192.0.2.1", "no certificate"))
		clock.Advance(time.Second)
		f.Flush()
		for _, ev := range rec.take() {
			counts = append(counts, ev.Details[DetailCount])
		}
	}
	// The first at once, then one event per minute (the first window's
	// count lacks the first refusal, written on its own).
	if diff := cmp.Diff([]string{"", "59", "60", "60", "60", "60"}, counts); diff != "" {
		t.Errorf("counts of the events written for 300 refusals over 5 minutes (-want +got):\n%s", diff)
	}
	clock.Advance(2 * time.Minute) // quiet: the window ends with nothing to write
	f.Flush()
	if evs := rec.take(); len(evs) != 0 {
		t.Fatalf("a quiet window wrote %v; want nothing", summarise(evs))
	}
	clock.Advance(time.Minute)
	f.Flush()
	if _, folded := f.Record(denied("192.0.2.1", "no certificate")); folded {
		t.Error("a refusal after a quiet interval was folded; want written at once")
	}
}

func TestFolderKinds(t *testing.T) {
	f, rec, clock := newFolder(t)
	first := []audit.Event{
		denied("192.0.2.1", "your certificate expired 3s ago: run tunnel login"),
		denied("192.0.2.2", "your certificate expired 3s ago: run tunnel login"),                        // another source
		denied("192.0.2.1", "no certificate"),                                                           // another reason
		{Type: audit.StreamDenied, Actor: "anonymous", SourceIP: "192.0.2.1", Reason: "no certificate"}, // another type
	}
	for _, ev := range first {
		if _, folded := f.Record(ev); folded {
			t.Errorf("%+v folded; want written at once (a kind of its own)", ev)
		}
	}
	// Only the digits differ: the same kind.
	if _, folded := f.Record(denied("192.0.2.1", "your certificate expired 47s ago: run tunnel login")); !folded {
		t.Error("a reason differing only in digits was written at once; want folded")
	}
	clock.Advance(time.Minute)
	f.Flush()
	evs := rec.take()
	if len(evs) != len(first)+1 || evs[len(evs)-1].Details[DetailCount] != "1" ||
		evs[len(evs)-1].Reason != "your certificate expired 47s ago: run tunnel login" {
		t.Errorf("events %v; want the 4 firsts and one folded event for the expired certificate", summarise(evs))
	}
}

func TestFolderCloseWritesWhatIsFolded(t *testing.T) {
	f, rec, _ := newFolder(t)
	for range 3 {
		f.Record(denied("192.0.2.1", "no certificate"))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	evs := rec.take()
	if len(evs) != 2 || evs[1].Details[DetailCount] != "2" {
		t.Fatalf("after Close: %v; want the first and one event with count 2", summarise(evs))
	}
	if _, folded := f.Record(denied("192.0.2.1", "no certificate")); folded {
		t.Error("a refusal after Close was folded; want written at once")
	}
}

func TestFolderBoundsItsMemory(t *testing.T) {
	f, rec, clock := newFolder(t)
	f.maxKeys = 10
	for i := range 100 {
		f.Record(denied(fmt.Sprintf("192.0.2.%d", i), "no certificate"))
	}
	if got := len(rec.take()); got != 11 {
		t.Errorf("%d events written at once for 100 sources with room for 10; want 11 (10, and one for the overflow)", got)
	}
	clock.Advance(time.Minute)
	f.Flush()
	evs := rec.take()
	if len(evs) != 1 || evs[0].Details[DetailCount] != "89" || evs[0].SourceIP != "" {
		t.Errorf("overflow: %v; want one event with count 89 and no source", summarise(evs))
	}
}

func TestFolderBackgroundFlush(t *testing.T) {
	rec := &recorder{}
	f := NewFolder(rec, 20*time.Millisecond, nil, nil)
	f.Start()
	f.Start()
	defer f.Close()
	for range 3 {
		f.Record(denied("192.0.2.1", "no certificate"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.evs)
		rec.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events after 30s; want 2 (the first, then the folded one)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFolderBoundsStoreWrites: 1,000 refusals from one source through a
// real Writer and store leave two rows, whose counts add up.
func TestFolderBoundsStoreWrites(t *testing.T) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := New(st)
	f := NewFolder(w, time.Minute, nil, nil)
	for range 1000 {
		f.Record(denied("192.0.2.1", "no certificate"))
	}
	f.Close()
	w.Close()
	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].Details[DetailCount] != "999" {
		t.Fatalf("stored %v; want 2 events, the second with count 999", summarise(evs))
	}
}
