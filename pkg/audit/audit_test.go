package audit_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

var t0 = time.Date(2030, time.March, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))

// chain returns a log of n events chained with audit.Chain, and its head.
func chain(n int) ([]audit.Event, string) {
	var evs []audit.Event
	var prev *audit.Event
	for i := range n {
		ev := audit.Event{
			Time: t0.Add(time.Duration(i) * time.Second), Type: audit.LoginFailure,
			Actor: fmt.Sprintf("user%d", i), Subject: "alice", Outcome: audit.Failure,
			Reason: "wrong password", SourceIP: "192.0.2.1",
			Details: map[string]string{"n": fmt.Sprint(i), "kind": "x509"},
		}
		evs = append(evs, audit.Chain(prev, ev))
		prev = &evs[len(evs)-1]
	}
	if n == 0 {
		return nil, ""
	}
	return evs, evs[n-1].Hash
}

func TestChain(t *testing.T) {
	evs, head := chain(3)
	want := []struct {
		seq  int64
		prev string
	}{{1, audit.GenesisHash}, {2, evs[0].Hash}, {3, evs[1].Hash}}
	for i, w := range want {
		ev := evs[i]
		if ev.Seq != w.seq || ev.PrevHash != w.prev {
			t.Errorf("event %d: got seq %d prev %s; want %d %s", i, ev.Seq, ev.PrevHash, w.seq, w.prev)
		}
		if len(ev.Hash) != 64 || strings.Trim(ev.Hash, "0123456789abcdef") != "" {
			t.Errorf("event %d: hash %q is not 64 hex digits", i, ev.Hash)
		}
		if ev.Time.Location() != time.UTC || ev.Time.Nanosecond()%1000 != 0 {
			t.Errorf("event %d: time %v is not UTC microseconds", i, ev.Time)
		}
	}
	if err := audit.Verify(evs, head); err != nil {
		t.Errorf("Verify of an untouched log: %v", err)
	}
	// An empty head says the log is empty: with events present, the
	// chain is broken.
	var be *audit.BrokenLinkError
	if err := audit.Verify(evs, ""); !errors.As(err, &be) || be.Seq != 1 || !strings.Contains(be.Reason, "head is empty") {
		t.Errorf("Verify with an empty head over 3 events: got %v; want broken at event 1 because the head is empty", err)
	}
	if err := audit.Verify(nil, ""); err != nil {
		t.Errorf("Verify of an empty log: %v", err)
	}

	// Chain ignores what the caller put in Seq, PrevHash and Hash.
	forged := audit.Chain(&evs[2], audit.Event{Seq: 99, PrevHash: "x", Hash: "y", Time: t0, Type: audit.LoginSuccess, Actor: "a", Outcome: audit.Success})
	if forged.Seq != 4 || forged.PrevHash != evs[2].Hash || forged.Hash == "y" {
		t.Errorf("got seq %d prev %s hash %s; want Chain to set them", forged.Seq, forged.PrevHash, forged.Hash)
	}

	// The same event chains to the same hash whatever the time zone or
	// sub-microsecond noise: the hash is over the normalised event.
	a := audit.Chain(nil, audit.Event{Time: t0, Type: audit.LoginSuccess, Actor: "a", Outcome: audit.Success})
	b := audit.Chain(nil, audit.Event{Time: t0.UTC().Truncate(time.Microsecond), Type: audit.LoginSuccess, Actor: "a", Outcome: audit.Success})
	if a.Hash != b.Hash {
		t.Errorf("same event at the same instant hashed differently: %s, %s", a.Hash, b.Hash)
	}
	// Nil and empty details are the same (stores give back nil for empty).
	c := audit.Chain(nil, audit.Event{Time: t0, Type: audit.LoginSuccess, Actor: "a", Outcome: audit.Success, Details: map[string]string{}})
	if a.Hash != c.Hash {
		t.Errorf("nil and empty Details hashed differently")
	}
}

// TestHashCoversEveryField checks that changing any field, alone, changes
// the hash, and that moving text between adjacent fields does too.
func TestHashCoversEveryField(t *testing.T) {
	evs, _ := chain(1)
	base := evs[0]
	edits := []struct {
		name string
		edit func(*audit.Event)
	}{
		{"time", func(e *audit.Event) { e.Time = e.Time.Add(time.Microsecond) }},
		{"type", func(e *audit.Event) { e.Type = audit.LoginSuccess }},
		{"actor", func(e *audit.Event) { e.Actor = "mallory" }},
		{"subject", func(e *audit.Event) { e.Subject = "bob" }},
		{"outcome", func(e *audit.Event) { e.Outcome = audit.Success }},
		{"reason", func(e *audit.Event) { e.Reason = "" }},
		{"source IP", func(e *audit.Event) { e.SourceIP = "198.51.100.1" }},
		{"detail value", func(e *audit.Event) { e.Details = map[string]string{"n": "1", "kind": "x509"} }},
		{"detail key", func(e *audit.Event) { e.Details = map[string]string{"m": "0", "kind": "x509"} }},
		{"detail removed", func(e *audit.Event) { e.Details = map[string]string{"n": "0"} }},
		{"detail added", func(e *audit.Event) { e.Details = map[string]string{"n": "0", "kind": "x509", "x": ""} }},
		{"text moved from actor to subject", func(e *audit.Event) { e.Actor, e.Subject = "user0a", "lice" }},
		{"text moved from detail key to value", func(e *audit.Event) { e.Details = map[string]string{"n": "0", "kin": "dx509"} }},
		{"prev hash", func(e *audit.Event) { e.PrevHash = strings.Repeat("1", 64) }},
		{"seq", func(e *audit.Event) { e.Seq = 2 }},
	}
	for _, tc := range edits {
		t.Run(tc.name, func(t *testing.T) {
			ev := base
			ev.Details = map[string]string{}
			for k, v := range base.Details {
				ev.Details[k] = v
			}
			tc.edit(&ev)
			// Checked against the untouched head, so that only the
			// event's own hash and links can catch the edit.
			err := audit.Verify([]audit.Event{ev}, base.Hash)
			var be *audit.BrokenLinkError
			if !errors.As(err, &be) || be.Seq != 1 {
				t.Fatalf("got %v; want the edit detected at event 1", err)
			}
			if strings.Contains(be.Reason, "recorded") {
				t.Errorf("got %q; want the edit caught by the event's hash or links, not by the head", be.Reason)
			}
		})
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name string
		// tamper returns the log as read back, and the head to check it
		// against.
		tamper  func(evs []audit.Event, head string) ([]audit.Event, string)
		wantSeq int64
		reason  string // a fragment of the reason
	}{
		{"edited middle event", func(evs []audit.Event, head string) ([]audit.Event, string) {
			evs[2].Reason = "all good"
			return evs, head
		}, 3, ""},
		{"edited event with its hash recomputed", func(evs []audit.Event, head string) ([]audit.Event, string) {
			// The forger re-chains the edited event, but not the ones after.
			ev := evs[2]
			ev.Outcome = audit.Success
			evs[2] = audit.Chain(&evs[1], ev)
			return evs, head
		}, 4, ""},
		{"edited last event with its hash recomputed", func(evs []audit.Event, head string) ([]audit.Event, string) {
			ev := evs[4]
			ev.Actor = "someone else"
			evs[4] = audit.Chain(&evs[3], ev)
			return evs, head
		}, 6, ""},
		{"deleted middle event", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return slices.Delete(evs, 2, 3), head
		}, 3, ""},
		{"deleted first event", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs[1:], head
		}, 1, ""},
		{"deleted middle event, later ones renumbered", func(evs []audit.Event, head string) ([]audit.Event, string) {
			evs = slices.Delete(evs, 2, 3)
			for i := 2; i < len(evs); i++ {
				evs[i].Seq--
			}
			return evs, head
		}, 3, ""},
		{"deleted last event", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs[:len(evs)-1], head
		}, 5, "deleted from the end"},
		{"deleted last two events", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs[:len(evs)-2], head
		}, 4, ""},
		{"deleted everything", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return nil, head
		}, 1, ""},
		{"deleted last event, head blanked", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs[:len(evs)-1], ""
		}, 1, "head is empty"},
		{"deleted last two events, head blanked", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs[:len(evs)-2], ""
		}, 1, "head is empty"},
		{"head blanked", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs, ""
		}, 1, "holds 5 events"},
		{"head set to another hash", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return evs, strings.Repeat("ab", 32)
		}, 6, "deleted from the end"},
		{"reordered", func(evs []audit.Event, head string) ([]audit.Event, string) {
			evs[1], evs[2] = evs[2], evs[1]
			return evs, head
		}, 2, ""},
		{"reordered, seqs swapped back", func(evs []audit.Event, head string) ([]audit.Event, string) {
			evs[1], evs[2] = evs[2], evs[1]
			evs[1].Seq, evs[2].Seq = 2, 3
			return evs, head
		}, 2, ""},
		{"inserted event", func(evs []audit.Event, head string) ([]audit.Event, string) {
			forged := audit.Chain(&evs[1], audit.Event{Time: t0, Type: audit.UserCreated, Actor: "admin", Subject: "mallory", Outcome: audit.Success})
			return slices.Insert(evs, 2, forged), head
		}, 4, ""},
		{"inserted event, later ones renumbered", func(evs []audit.Event, head string) ([]audit.Event, string) {
			forged := audit.Chain(&evs[1], audit.Event{Time: t0, Type: audit.UserCreated, Actor: "admin", Subject: "mallory", Outcome: audit.Success})
			evs = slices.Insert(evs, 2, forged)
			for i := 3; i < len(evs); i++ {
				evs[i].Seq++
			}
			return evs, head
		}, 4, ""},
		{"appended event, head not updated", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return append(evs, audit.Chain(&evs[4], audit.Event{Time: t0, Type: audit.UserCreated, Actor: "x", Outcome: audit.Success})), head
		}, 6, "added"},
		{"duplicated event", func(evs []audit.Event, head string) ([]audit.Event, string) {
			return slices.Insert(evs, 2, evs[1]), head
		}, 3, ""},
		{"first event not at genesis", func(evs []audit.Event, head string) ([]audit.Event, string) {
			evs[0].PrevHash = strings.Repeat("a", 64)
			return evs, head
		}, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, head := chain(5)
			evs, head = tc.tamper(evs, head)
			err := audit.Verify(evs, head)
			var be *audit.BrokenLinkError
			if !errors.As(err, &be) {
				t.Fatalf("got %v; want a *BrokenLinkError", err)
			}
			if !errors.Is(err, audit.ErrBrokenChain) {
				t.Errorf("error %v does not wrap ErrBrokenChain", err)
			}
			if be.Seq != tc.wantSeq {
				t.Errorf("got broken at %d (%s); want %d", be.Seq, be.Reason, tc.wantSeq)
			}
			if !strings.Contains(be.Reason, tc.reason) {
				t.Errorf("got reason %q; want it to contain %q", be.Reason, tc.reason)
			}
			if be.Reason == "" || !strings.Contains(err.Error(), fmt.Sprint(be.Seq)) {
				t.Errorf("error %q does not say where and why", err)
			}
		})
	}
}

func TestVerifyDoesNotChangeEvents(t *testing.T) {
	evs, head := chain(4)
	want := slices.Clone(evs)
	if err := audit.Verify(evs, head); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Errorf("Verify changed the events (-before +after):\n%s", diff)
	}
}

func TestNormalize(t *testing.T) {
	got := audit.Normalize(t0)
	want := time.Date(2030, time.March, 4, 4, 6, 7, 123456000, time.UTC)
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("got %v; want %v", got, want)
	}
}
