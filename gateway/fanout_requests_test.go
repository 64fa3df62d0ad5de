package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestFanoutEndsRequestWindows: a gateway told of an approved request (its
// own change included) ends it at the end of its window: it re-evaluates
// live access first, then marks the request expired, once, even with two
// gateways' timers; a pending request expires at its decision deadline;
// a request ended elsewhere makes the others re-evaluate.
func TestFanoutEndsRequestWindows(t *testing.T) {
	ctx := t.Context()
	st := fanoutFixture(t, time.Now().Add(time.Hour))
	if err := st.CreateRole(ctx, store.Role{Name: "dba", CreatedAt: time.Now()}, testEvent(audit.RoleCreated, "dba")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range []string{"r-approved", "r-pending"} {
		r := store.AccessRequest{ID: id, User: "alice", Role: "dba", Reason: "x", Duration: time.Hour, CreatedAt: now, PendingUntil: now.Add(time.Hour)}
		if id == "r-pending" {
			r.PendingUntil = now.Add(300 * time.Millisecond)
		}
		if err := st.CreateRequest(ctx, r, testEvent(audit.RequestCreated, id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DecideRequest(ctx, "r-approved", store.RequestDecision{State: store.RequestApproved, By: "dave", At: now,
		Start: now, End: now.Add(300 * time.Millisecond)}, testEvent(audit.RequestApproved, "r-approved")); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		n1, n2 int
	)
	f1, f2 := newTestFanout(st, nil, new(int)), newTestFanout(st, nil, new(int))
	f1.reevaluate = func(context.Context) error { mu.Lock(); defer mu.Unlock(); n1++; return nil }
	f2.reevaluate = func(context.Context) error { mu.Lock(); defer mu.Unlock(); n2++; return nil }
	f2.self = "gw-c"
	defer f1.stop()
	defer f2.stop()
	for _, f := range []*fanout{f1, f2} {
		for _, id := range []string{"r-approved", "r-pending"} {
			f.apply(ctx, store.Change{Kind: store.ChangeRequest, ID: id, Subject: "alice", Origin: "gw-b"})
		}
	}
	reevals := func() (int, int) { mu.Lock(); defer mu.Unlock(); return n1, n2 }
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, errA := st.GetRequest(ctx, "r-approved")
		p, errP := st.GetRequest(ctx, "r-pending")
		if errA == nil && errP == nil && a.State == store.RequestExpired && p.State == store.RequestExpired {
			if a.EndedBy != "system" || a.EndReason != "the window ended" || p.EndReason != "not decided in time" {
				t.Errorf("ended requests: %+v, %+v", a, p)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests not expired: %+v %v, %+v %v", a, errA, p, errP)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // both timers have fired
	if a, b := reevals(); a == 0 || b == 0 {
		t.Errorf("re-evaluations at the end of the window: %d and %d; want both gateways to re-evaluate", a, b)
	}
	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	expired := 0
	for _, ev := range evs {
		if ev.Type == audit.RequestExpired {
			expired++
		}
	}
	if expired != 2 {
		t.Errorf("%d request.expired events; want 2 (one per request, whichever gateway came first)", expired)
	}

	// A revocation made on another gateway: this one re-evaluates.
	before, _ := reevals()
	f1.apply(ctx, store.Change{Kind: store.ChangeRequest, ID: "r-approved", Subject: "alice", Origin: "gw-a"})
	if after, _ := reevals(); after != before+1 {
		t.Errorf("a request ended on another gateway: %d re-evaluations; want %d", after, before+1)
	}
}
