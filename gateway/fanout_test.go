package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// fakeKiller records what it was told to close.
type fakeKiller struct {
	mu  sync.Mutex
	got []string
}

func (k *fakeKiller) add(s string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.got = append(k.got, s)
}
func (k *fakeKiller) EndSession(s store.Session, reason string) {
	k.add("session " + s.ID + ": " + reason)
}
func (k *fakeKiller) EndUser(name, reason string)  { k.add("user " + name + ": " + reason) }
func (k *fakeKiller) EndAgent(name, reason string) { k.add("agent " + name + ": " + reason) }
func (k *fakeKiller) calls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.got)
}

func testEvent(typ audit.Type, subject string) audit.Event {
	return audit.Event{Time: time.Now(), Type: typ, Actor: "admin", Subject: subject, Outcome: audit.Success}
}

// fanoutFixture is a store with a user alice, an agent web1 and an active
// session s1 of alice on web1 that ends at deadline.
func fanoutFixture(t *testing.T, deadline time.Time) store.Store {
	t.Helper()
	ctx := t.Context()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), DBFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateUser(ctx, store.User{Name: "alice", PasswordHash: "x", TOTPSecret: []byte("s"), CreatedAt: time.Now()},
		testEvent(audit.UserCreated, "alice")))
	h := sha256.Sum256([]byte("token"))
	tok := store.JoinToken{Hash: hex.EncodeToString(h[:]), Agent: "web1", CreatedBy: "admin", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	must(st.CreateJoinToken(ctx, tok, testEvent(audit.TokenCreated, "web1")))
	_, err = st.ConsumeJoinToken(ctx, tok.Hash, time.Now(), testEvent(audit.AgentEnrolled, "web1"))
	must(err)
	s := store.Session{ID: "s1", User: "alice", Node: "web1", Login: "ubuntu", CreatedAt: time.Now(), Deadline: deadline}
	must(st.CreateSession(ctx, s, nil, []audit.Event{testEvent(audit.SessionCreated, "s1")}))
	return st
}

func newTestFanout(st store.Store, k *fakeKiller, reevals *int) *fanout {
	var mu sync.Mutex
	return &fanout{self: "gw-b", store: st, killers: nil, interval: time.Hour, clock: time.Now,
		log: slog.New(slog.DiscardHandler),
		reevaluate: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			*reevals++
			return nil
		}}
}

// TestFanoutAppliesOtherGatewaysChanges: a change made by another gateway
// closes what runs here (the user's, the agent's, the session's), without
// writing the store; a change this gateway made is skipped.
func TestFanoutAppliesOtherGatewaysChanges(t *testing.T) {
	ctx := t.Context()
	st := fanoutFixture(t, time.Now().Add(time.Hour))
	k := &fakeKiller{}
	var reevals int
	f := newTestFanout(st, k, &reevals)
	f.killers = append(f.killers, k)
	defer f.stop()
	before, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}

	// What this gateway did itself was done already.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.SetUserLocked(ctx, "alice", true, testEvent(audit.UserLocked, "alice")))
	f.apply(ctx, store.Change{Kind: store.ChangeUser, ID: "alice", Origin: "gw-b"})
	if got := k.calls(); len(got) != 0 || reevals != 0 {
		t.Fatalf("a change of this gateway's own was applied again: %v, %d re-evaluations", got, reevals)
	}
	f.apply(ctx, store.Change{Kind: store.ChangeUser, ID: "alice", Origin: "gw-a"})
	must(st.SetAgentLocked(ctx, "web1", true, testEvent(audit.AgentLocked, "web1")))
	f.apply(ctx, store.Change{Kind: store.ChangeAgent, ID: "web1", Origin: "gw-a"})
	_, err = st.EndSession(ctx, "s1", store.SessionRevoked, "access revoked by an administrator", time.Now(), testEvent(audit.SessionRevoked, "s1"))
	must(err)
	f.apply(ctx, store.Change{Kind: store.ChangeSession, ID: "s1", Subject: "alice", Origin: "gw-a"})
	f.apply(ctx, store.Change{Kind: store.ChangePolicy, ID: "7", Origin: "gw-a"})
	want := []string{
		"user alice: access revoked by an administrator",
		"agent web1: access revoked by an administrator",
		"session s1: access revoked by an administrator",
	}
	if got := k.calls(); !slices.Equal(got, want) {
		t.Errorf("killer calls = %q\nwant %q", got, want)
	}
	if reevals != 2 { // the user change (roles may have changed) and the policy change
		t.Errorf("re-evaluations = %d, want 2", reevals)
	}
	after, err := st.ListAudit(ctx, store.AuditFilter{})
	must(err)
	if len(after) != len(before)+3 { // the three changes made here, nothing from the fan-out
		t.Errorf("audit events: %d before, %d after the 3 changes; the fan-out wrote some", len(before), len(after))
	}
	// A user removed elsewhere is closed here too.
	must(st.DeleteUser(ctx, "alice", testEvent(audit.UserDeleted, "alice")))
	f.apply(ctx, store.Change{Kind: store.ChangeUser, ID: "alice", Origin: "gw-a"})
	if got := k.calls(); got[len(got)-1] != "user alice: access revoked by an administrator" {
		t.Errorf("after removal: killer calls = %q", got)
	}
}

// TestFanoutEndsForeignSessionAtDeadline: a session another gateway created
// is ended at its deadline by every gateway that learnt of it, with one
// audit event in all, and closed here.
func TestFanoutEndsForeignSessionAtDeadline(t *testing.T) {
	ctx := t.Context()
	st := fanoutFixture(t, time.Now().Add(300*time.Millisecond))
	var n1, n2 int
	k1, k2 := &fakeKiller{}, &fakeKiller{}
	f1, f2 := newTestFanout(st, k1, &n1), newTestFanout(st, k2, &n2)
	f1.killers, f2.killers = []sessions.Killer{k1}, []sessions.Killer{k2}
	f2.self = "gw-c"
	defer f1.stop()
	defer f2.stop()
	for _, f := range []*fanout{f1, f2} {
		f.apply(ctx, store.Change{Kind: store.ChangeSession, ID: "s1", Subject: "alice", Origin: "gw-a"})
		f.apply(ctx, store.Change{Kind: store.ChangeSession, ID: "s1", Subject: "alice", Origin: "gw-a"}) // twice: one timer
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(k1.calls()) == 0 || len(k2.calls()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("session not closed at its deadline: %q, %q", k1.calls(), k2.calls())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := st.GetSession(ctx, "s1")
	if err != nil || s.State != store.SessionExpired || s.EndReason != "session expired" {
		t.Fatalf("session after its deadline = %+v, %v; want expired", s, err)
	}
	for _, k := range []*fakeKiller{k1, k2} {
		if got := k.calls(); !slices.Equal(got, []string{"session s1: session expired"}) {
			t.Errorf("killer calls = %q; want the session closed once as expired", got)
		}
	}
	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	ended := 0
	for _, e := range evs {
		if e.Type == audit.SessionEnded && e.Subject == "s1" {
			ended++
		}
	}
	if ended != 1 {
		t.Errorf("%d session.ended events for s1, want 1", ended)
	}
}

// TestFanoutRunStopsWithWatch: run returns when the watch channel closes,
// and a Resync reconciles (re-evaluates).
func TestFanoutRunStopsWithWatch(t *testing.T) {
	st := fanoutFixture(t, time.Now().Add(time.Hour))
	var n int
	f := newTestFanout(st, &fakeKiller{}, &n)
	ch := make(chan store.Change, 1)
	ch <- store.Change{Kind: store.ChangeResync}
	close(ch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(t.Context(), ch)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after the watch closed")
	}
	if n != 1 {
		t.Errorf("re-evaluations after a Resync = %d, want 1", n)
	}
}
