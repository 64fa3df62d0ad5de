package storetest

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testGateways: heartbeats insert then replace a gateway's row, the list is
// by ID with times in UTC to the microsecond, and removal is idempotent.
func testGateways(t *testing.T, s store.Store) {
	ctx := t.Context()
	if gs, err := s.ListGateways(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("ListGateways of an empty store = %v, %v; want none", gs, err)
	}
	b := store.Gateway{ID: "gw-b", APIAddr: "10.0.0.2:8443", QUICAddr: "10.0.0.2:8443", Version: "1.0",
		StartedAt: t0, HeartbeatAt: t0, AliveFor: 30 * time.Second}
	a := store.Gateway{ID: "gw-a", APIAddr: "10.0.0.1:8443", QUICAddr: "10.0.0.1:8443", SSHAddr: "10.0.0.1:2222",
		Version: "1.0", StartedAt: t0, HeartbeatAt: t0, AliveFor: 30 * time.Second}
	must(t, "UpsertGateway gw-b", s.UpsertGateway(ctx, b))
	must(t, "UpsertGateway gw-a", s.UpsertGateway(ctx, a))
	a.HeartbeatAt = t0.Add(10 * time.Second)
	a.Version = "1.1"
	a.AliveFor = 3 * time.Second
	must(t, "UpsertGateway gw-a again", s.UpsertGateway(ctx, a))
	if !a.Alive(t0.Add(12*time.Second)) || a.Alive(t0.Add(13*time.Second)) {
		t.Error("Gateway.Alive does not follow HeartbeatAt+AliveFor")
	}
	if err := s.UpsertGateway(ctx, store.Gateway{}); err == nil {
		t.Error("UpsertGateway without an ID succeeded")
	}
	gs, err := s.ListGateways(ctx)
	must(t, "ListGateways", err)
	for _, g := range gs {
		checkUTC(t, "gateway times", g.StartedAt, g.HeartbeatAt)
	}
	norm := func(g store.Gateway) store.Gateway {
		g.StartedAt, g.HeartbeatAt = audit.Normalize(g.StartedAt), audit.Normalize(g.HeartbeatAt)
		return g
	}
	if diff := cmp.Diff([]store.Gateway{norm(a), norm(b)}, gs); diff != "" {
		t.Errorf("ListGateways (-want +got):\n%s", diff)
	}
	must(t, "DeleteGateway gw-a", s.DeleteGateway(ctx, "gw-a"))
	must(t, "DeleteGateway gw-a twice", s.DeleteGateway(ctx, "gw-a"))
	gs, err = s.ListGateways(ctx)
	must(t, "ListGateways", err)
	if diff := cmp.Diff([]store.Gateway{norm(b)}, gs); diff != "" {
		t.Errorf("ListGateways after removal (-want +got):\n%s", diff)
	}
	// Heartbeats are not audited.
	if evs := verified(t, s); len(evs) != 0 {
		t.Errorf("gateway heartbeats appended %v", types(evs))
	}
}

// testWatch: every change that can narrow live access is delivered to a
// watcher, in commit order, with what it is about; a failed call emits
// nothing; the channel closes when the watch's context ends.
func testWatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := watch(t, s)
	next := w.next
	mustCreateRole(t, s, "dev", "ubuntu")
	next(store.Change{Kind: store.ChangeRole, ID: "dev"})
	mustCreateUser(t, s, "alice", "dev")
	// Creating a user narrows nothing: no change. The next is the lock.
	must(t, "SetUserLocked", s.SetUserLocked(ctx, "alice", true, ev(audit.UserLocked, "alice")))
	next(store.Change{Kind: store.ChangeUser, ID: "alice"})
	// A failed call emits nothing.
	if err := s.SetUserLocked(ctx, "nobody", true, ev(audit.UserLocked, "nobody")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetUserLocked of an unknown user = %v", err)
	}
	must(t, "SetUserRoles", s.SetUserRoles(ctx, "alice", nil, ev(audit.UserRolesChanged, "alice")))
	next(store.Change{Kind: store.ChangeUser, ID: "alice"})
	r := store.Role{Name: "dev", Logins: []string{"root"}, CreatedAt: t0}
	must(t, "UpdateRole", s.UpdateRole(ctx, r, ev(audit.RoleUpdated, "dev")))
	next(store.Change{Kind: store.ChangeRole, ID: "dev"})
	must(t, "DeleteRole", s.DeleteRole(ctx, "dev", ev(audit.RoleDeleted, "dev")))
	next(store.Change{Kind: store.ChangeRole, ID: "dev"})
	must(t, "DeleteUser", s.DeleteUser(ctx, "alice", ev(audit.UserDeleted, "alice")))
	next(store.Change{Kind: store.ChangeUser, ID: "alice"})

	tok := joinToken("watch-token", "web1", t0, time.Hour)
	mustCreateToken(t, s, tok)
	enrol(t, s, tok, t0)
	must(t, "SetAgentLocked", s.SetAgentLocked(ctx, "web1", true, ev(audit.AgentLocked, "web1")))
	next(store.Change{Kind: store.ChangeAgent, ID: "web1"})
	must(t, "SetAgentLocked false", s.SetAgentLocked(ctx, "web1", false, ev(audit.AgentUnlocked, "web1")))
	next(store.Change{Kind: store.ChangeAgent, ID: "web1"})

	rule, err := s.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "*", To: "db/pg", CreatedBy: "admin", CreatedAt: t0},
		ev(audit.PolicyAdded, "db/pg"))
	must(t, "AddPolicyRule", err)
	id := strconv.FormatInt(rule.ID, 10)
	next(store.Change{Kind: store.ChangePolicy, ID: id})
	must(t, "DeletePolicyRule", s.DeletePolicyRule(ctx, rule.ID, ev(audit.PolicyRemoved, id)))
	next(store.Change{Kind: store.ChangePolicy, ID: id})

	mustCreateUser(t, s, "bob")
	ss := mustCreateSession(t, s, newSession("w1", "bob", "web1", t0))
	next(store.Change{Kind: store.ChangeSession, ID: ss.ID, Subject: "bob"})
	_, err = s.EndSession(ctx, ss.ID, store.SessionRevoked, "revoked", t0.Add(time.Minute), ev(audit.SessionRevoked, ss.ID))
	must(t, "EndSession", err)
	next(store.Change{Kind: store.ChangeSession, ID: ss.ID, Subject: "bob"})

	w.stop()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-w.ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the watch channel stayed open after its context ended")
		}
	}
}
