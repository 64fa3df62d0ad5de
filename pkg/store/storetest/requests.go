package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testRequests holds implementations to what store.RequestStore documents:
// creation and its refusals, newest-first listing and its filters, one
// decision only (also when many approvers decide at once), the ends and
// their idempotence, the active window, the role's Approve and Sudo
// fields, and the events and changes each step emits.
func testRequests(t *testing.T, s store.Store) {
	ctx := t.Context()
	dba := store.Role{Name: "dba", Logins: []string{"postgres"}, MaxTTL: 2 * time.Hour, Sudo: true, CreatedAt: t0}
	must(t, "CreateRole dba", s.CreateRole(ctx, dba, ev(audit.RoleCreated, "dba")))
	lead := store.Role{Name: "oncall-lead", Approve: []string{"dba", "web"}, CreatedAt: t0}
	must(t, "CreateRole oncall-lead", s.CreateRole(ctx, lead, ev(audit.RoleCreated, "oncall-lead")))
	mustCreateUser(t, s, "alice")
	mustCreateUser(t, s, "bob", "oncall-lead")

	t.Run("RoleFields", func(t *testing.T) {
		got, err := s.GetRole(ctx, "oncall-lead")
		must(t, "GetRole", err)
		if diff := cmp.Diff([]string{"dba", "web"}, got.Approve); diff != "" {
			t.Errorf("Approve (-want +got):\n%s", diff)
		}
		got, err = s.GetRole(ctx, "dba")
		must(t, "GetRole", err)
		if !got.Sudo || len(got.Approve) != 0 {
			t.Errorf("dba = %+v; want Sudo and no Approve", got)
		}
		got.Sudo, got.Approve = false, []string{"web"}
		must(t, "UpdateRole", s.UpdateRole(ctx, got, ev(audit.RoleUpdated, "dba")))
		got, err = s.GetRole(ctx, "dba")
		must(t, "GetRole", err)
		if got.Sudo || !cmp.Equal(got.Approve, []string{"web"}) {
			t.Errorf("after UpdateRole dba = %+v; want no Sudo, Approve [web]", got)
		}
		got.Sudo, got.Approve = true, nil
		must(t, "UpdateRole", s.UpdateRole(ctx, got, ev(audit.RoleUpdated, "dba")))
	})

	newReq := func(id, user string, created time.Time) store.AccessRequest {
		return store.AccessRequest{ID: id, User: user, Role: "dba", Reason: "INC-123: fix replication",
			Duration: 2 * time.Hour, CreatedAt: created, PendingUntil: created.Add(24 * time.Hour)}
	}

	t.Run("CreateGetList", func(t *testing.T) {
		changes, err := s.Watch(ctx)
		must(t, "Watch", err)
		r := newReq("r1", "alice", t0)
		must(t, "CreateRequest", s.CreateRequest(ctx, r, evAt(audit.RequestCreated, "r1", t0)))
		got, err := s.GetRequest(ctx, "r1")
		must(t, "GetRequest", err)
		want := r
		want.State = store.RequestPending
		want.CreatedAt, want.PendingUntil = audit.Normalize(r.CreatedAt), audit.Normalize(r.PendingUntil)
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("GetRequest (-want +got):\n%s", diff)
		}
		checkUTC(t, "request", got.CreatedAt, got.PendingUntil)
		select {
		case c := <-changes:
			if c.Kind != store.ChangeRequest || c.ID != "r1" || c.Subject != "alice" {
				t.Errorf("change = %+v; want a request change r1 of alice", c)
			}
		case <-time.After(30 * time.Second):
			t.Error("CreateRequest emitted no change")
		}

		checkErr(t, "CreateRequest duplicate", s.CreateRequest(ctx, r, ev(audit.RequestCreated, "r1")), store.ErrExists)
		bad := newReq("r-unknown-user", "nobody", t0)
		checkErr(t, "CreateRequest unknown user", s.CreateRequest(ctx, bad, ev(audit.RequestCreated, bad.ID)), store.ErrNotFound)
		bad = newReq("r-unknown-role", "alice", t0)
		bad.Role = "nope"
		checkErr(t, "CreateRequest unknown role", s.CreateRequest(ctx, bad, ev(audit.RequestCreated, bad.ID)), store.ErrNotFound)
		bad = newReq("r-approved", "alice", t0)
		bad.State = store.RequestApproved
		if err := s.CreateRequest(ctx, bad, ev(audit.RequestCreated, bad.ID)); err == nil {
			t.Error("CreateRequest of an approved request succeeded; want a refusal")
		}
		bad = newReq("bad id/x", "alice", t0)
		if err := s.CreateRequest(ctx, bad, ev(audit.RequestCreated, bad.ID)); err == nil {
			t.Error("CreateRequest with a bad ID succeeded; want a refusal")
		}
		_, err = s.GetRequest(ctx, "r-unknown-user")
		checkErr(t, "GetRequest unknown", err, store.ErrNotFound)

		must(t, "CreateRequest r2", s.CreateRequest(ctx, newReq("r2", "bob", t0.Add(time.Minute)), ev(audit.RequestCreated, "r2")))
		must(t, "CreateRequest r3", s.CreateRequest(ctx, newReq("r3", "alice", t0.Add(2*time.Minute)), ev(audit.RequestCreated, "r3")))
		all, err := s.ListRequests(ctx, store.RequestFilter{})
		must(t, "ListRequests", err)
		if ids := requestIDs(all); !cmp.Equal(ids, []string{"r3", "r2", "r1"}) {
			t.Errorf("ListRequests = %v; want newest first [r3 r2 r1]", ids)
		}
		mine, err := s.ListRequests(ctx, store.RequestFilter{User: "alice", Limit: 1})
		must(t, "ListRequests", err)
		if ids := requestIDs(mine); !cmp.Equal(ids, []string{"r3"}) {
			t.Errorf("ListRequests(alice, limit 1) = %v; want [r3]", ids)
		}
	})

	t.Run("DecideAndEnd", func(t *testing.T) {
		start := t0.Add(time.Hour)
		end := start.Add(2 * time.Hour)
		d := store.RequestDecision{State: store.RequestApproved, By: "bob", Comment: "go ahead", At: start, Start: start, End: end}
		got, err := s.DecideRequest(ctx, "r1", d, evAt(audit.RequestApproved, "r1", start))
		must(t, "DecideRequest", err)
		if got.State != store.RequestApproved || got.DecidedBy != "bob" || got.Comment != "go ahead" ||
			!got.Start.Equal(audit.Normalize(start)) || !got.End.Equal(audit.Normalize(end)) || !got.DecidedAt.Equal(audit.Normalize(start)) {
			t.Errorf("DecideRequest = %+v; want approved by bob with the window", got)
		}
		checkUTC(t, "decided request", got.DecidedAt, got.Start, got.End)
		_, err = s.DecideRequest(ctx, "r1", store.RequestDecision{State: store.RequestDenied, By: "carol", At: start}, ev(audit.RequestDenied, "r1"))
		checkErr(t, "DecideRequest twice", err, store.ErrNotPending)
		_, err = s.DecideRequest(ctx, "nope", d, ev(audit.RequestApproved, "nope"))
		checkErr(t, "DecideRequest unknown", err, store.ErrNotFound)
		if _, err := s.DecideRequest(ctx, "r3", store.RequestDecision{State: store.RequestApproved, By: "bob", At: start}, ev(audit.RequestApproved, "r3")); err == nil {
			t.Error("an approval without a window succeeded; want a refusal")
		}

		approved, err := s.ListRequests(ctx, store.RequestFilter{States: []store.RequestState{store.RequestApproved}})
		must(t, "ListRequests approved", err)
		if ids := requestIDs(approved); !cmp.Equal(ids, []string{"r1"}) {
			t.Errorf("ListRequests(approved) = %v; want [r1]", ids)
		}

		for _, c := range []struct {
			at   time.Time
			want []string
		}{
			{start.Add(-time.Second), nil},
			{start, []string{"r1"}},
			{end.Add(-time.Microsecond), []string{"r1"}},
			{end, nil},
		} {
			grants, err := s.ActiveGrants(ctx, "alice", c.at)
			must(t, "ActiveGrants", err)
			if ids := requestIDs(grants); !cmp.Equal(ids, c.want, cmpopts.EquateEmpty()) {
				t.Errorf("ActiveGrants(alice, %v) = %v; want %v", c.at, ids, c.want)
			}
		}
		if grants, err := s.ActiveGrants(ctx, "bob", start); err != nil || len(grants) != 0 {
			t.Errorf("ActiveGrants(bob) = %v, %v; want none", requestIDs(grants), err)
		}

		revokedAt := start.Add(time.Minute)
		ended, changed, err := s.EndRequest(ctx, "r1", store.RequestRevoked, "bob", "done early", revokedAt, ev(audit.RequestRevoked, "r1"))
		must(t, "EndRequest", err)
		if !changed || ended.State != store.RequestRevoked || ended.EndedBy != "bob" || ended.EndReason != "done early" || !ended.EndedAt.Equal(audit.Normalize(revokedAt)) {
			t.Errorf("EndRequest = %+v, %v; want revoked by bob", ended, changed)
		}
		before := len(verified(t, s))
		again, changed, err := s.EndRequest(ctx, "r1", store.RequestExpired, "system", "window ended", end, ev(audit.RequestExpired, "r1"))
		must(t, "EndRequest again", err)
		if changed || again.State != store.RequestRevoked {
			t.Errorf("EndRequest of a revoked request = %+v, %v; want it unchanged", again, changed)
		}
		if after := len(verified(t, s)); after != before {
			t.Errorf("ending an ended request appended %d events; want none", after-before)
		}
		if grants, _ := s.ActiveGrants(ctx, "alice", revokedAt); len(grants) != 0 {
			t.Errorf("ActiveGrants after revocation = %v; want none", requestIDs(grants))
		}
		_, _, err = s.EndRequest(ctx, "nope", store.RequestExpired, "system", "", end, ev(audit.RequestExpired, "nope"))
		checkErr(t, "EndRequest unknown", err, store.ErrNotFound)

		// A pending request cannot be revoked, but it expires.
		_, changed, err = s.EndRequest(ctx, "r2", store.RequestRevoked, "bob", "", end, ev(audit.RequestRevoked, "r2"))
		must(t, "EndRequest revoke pending", err)
		if changed {
			t.Error("revoking a pending request changed it; want no change")
		}
		exp, changed, err := s.EndRequest(ctx, "r2", store.RequestExpired, "system", "not decided in time", end, ev(audit.RequestExpired, "r2"))
		must(t, "EndRequest expire pending", err)
		if !changed || exp.State != store.RequestExpired {
			t.Errorf("expiring a pending request = %+v, %v; want expired", exp, changed)
		}
		_, err = s.DecideRequest(ctx, "r2", d, ev(audit.RequestApproved, "r2"))
		checkErr(t, "DecideRequest expired", err, store.ErrNotPending)

		denied, err := s.DecideRequest(ctx, "r3", store.RequestDecision{State: store.RequestDenied, By: "bob", Comment: "not now", At: end},
			ev(audit.RequestDenied, "r3"))
		must(t, "DecideRequest deny", err)
		if denied.State != store.RequestDenied || !denied.Start.IsZero() || denied.Comment != "not now" {
			t.Errorf("denied request = %+v", denied)
		}
		if _, changed, _ := s.EndRequest(ctx, "r3", store.RequestExpired, "system", "", end, ev(audit.RequestExpired, "r3")); changed {
			t.Error("expiring a denied request changed it")
		}
	})

	t.Run("DecideConcurrent", func(t *testing.T) {
		must(t, "CreateRequest", s.CreateRequest(ctx, newReq("rc", "alice", t0), ev(audit.RequestCreated, "rc")))
		before := len(verified(t, s))
		const approvers = 8
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			wins      []store.AccessRequest
			notPendng int
		)
		start := make(chan struct{})
		for i := range approvers {
			wg.Go(func() {
				<-start
				d := store.RequestDecision{State: store.RequestApproved, By: "bob", At: t0, Start: t0, End: t0.Add(time.Hour)}
				if i%2 == 1 {
					d = store.RequestDecision{State: store.RequestDenied, By: "carol", At: t0}
				}
				got, err := s.DecideRequest(ctx, "rc", d, ev(audit.RequestApproved, "rc"))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins = append(wins, got)
				case errors.Is(err, store.ErrNotPending):
					notPendng++
				default:
					t.Errorf("concurrent DecideRequest: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(wins) != 1 || notPendng != approvers-1 {
			t.Fatalf("%d decisions succeeded and %d were refused as no longer pending; want 1 and %d", len(wins), notPendng, approvers-1)
		}
		final, err := s.GetRequest(ctx, "rc")
		must(t, "GetRequest", err)
		if diff := cmp.Diff(final, wins[0]); diff != "" {
			t.Errorf("the winning decision differs from the stored request (-stored +returned):\n%s", diff)
		}
		if after := len(verified(t, s)); after != before+1 {
			t.Errorf("concurrent decisions appended %d events; want 1", after-before)
		}
	})
}

func requestIDs(rs []store.AccessRequest) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}
