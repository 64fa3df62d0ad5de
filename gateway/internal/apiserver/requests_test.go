package apiserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// requestsServer: roles dba (login postgres, max TTL 2 h) and lead
// (approves dba); users bob (none), dave and erin (lead), carol (none);
// clients holding each one's certificate.
func requestsServer(t *testing.T) (*testServer, map[string]*http.Client) {
	s := newServer(t)
	ctx := context.Background()
	ev := audit.Event{Time: s.clock.Now(), Type: audit.RoleCreated, Actor: "system", Outcome: audit.Success}
	if err := s.store.CreateRole(ctx, store.Role{Name: "dba", Logins: []string{"postgres"}, MaxTTL: 2 * time.Hour, CreatedAt: s.clock.Now()}, ev); err != nil {
		t.Fatal(err)
	}
	if err := s.store.CreateRole(ctx, store.Role{Name: "lead", Approve: []string{"dba"}, CreatedAt: s.clock.Now()}, ev); err != nil {
		t.Fatal(err)
	}
	clients := map[string]*http.Client{}
	for name, roles := range map[string][]string{"bob": nil, "dave": {"lead"}, "erin": {"lead"}, "carol": nil} {
		s.addUser(name, roles...)
		clients[name] = s.client(s.issue(s.ca, name, 8*time.Hour, true))
	}
	return s, clients
}

func (s *testServer) createRequest(c *http.Client, role string, d time.Duration) api.AccessRequest {
	s.t.Helper()
	r := s.do(c, "POST", api.PathRequests, api.CreateAccessRequest{Role: role, Duration: api.Duration(d), Reason: "INC-1"})
	if r.status != http.StatusCreated {
		s.t.Fatalf("create request: %d %s", r.status, r.body)
	}
	var out api.AccessRequest
	r.decode(s.t, &out)
	return out
}

// TestRequestDecisions: the requester cannot approve; a user without an
// approving role cannot see nor decide; an approver can; the window is
// what was asked capped by the role's max TTL; a denial needs a comment;
// refusals are audited.
func TestRequestDecisions(t *testing.T) {
	s, c := requestsServer(t)
	req := s.createRequest(c["bob"], "dba", 5*time.Hour)
	if req.State != api.RequestPending || req.User != "bob" || req.CanDecide {
		t.Fatalf("created request = %+v", req)
	}
	wantError(t, s.do(c["bob"], "POST", api.RequestActionPath(req.ID, "approve"), api.RequestDecision{}), 403, api.CodeForbidden,
		"you cannot approve or deny your own request")
	wantError(t, s.do(c["carol"], "POST", api.RequestActionPath(req.ID, "approve"), api.RequestDecision{}), 404, api.CodeNotFound,
		"no access request "+req.ID)
	wantError(t, s.do(c["dave"], "POST", api.RequestActionPath(req.ID, "deny"), api.RequestDecision{}), 400, api.CodeBadRequest,
		"a denial needs a comment")
	wantError(t, s.do(c["bob"], "POST", api.PathRequests, api.CreateAccessRequest{Role: "nosuch", Duration: api.Duration(time.Hour), Reason: "x"}),
		403, api.CodeForbidden, "there is no role nosuch")
	wantError(t, s.do(c["bob"], "POST", api.PathRequests, api.CreateAccessRequest{Role: "dba", Duration: api.Duration(time.Hour)}),
		400, api.CodeBadRequest, "a reason is required")

	var list []api.AccessRequest
	s.do(c["dave"], "GET", api.PathRequests, nil).decode(t, &list)
	if len(list) != 1 || list[0].ID != req.ID || !list[0].CanDecide {
		t.Fatalf("dave's list = %+v; want bob's request, his to decide", list)
	}
	s.do(c["carol"], "GET", api.PathRequests+"?all=1", nil).decode(t, &list)
	if len(list) != 0 {
		t.Errorf("carol's list = %+v; want nothing", list)
	}

	r := s.do(c["dave"], "POST", api.RequestActionPath(req.ID, "approve"), api.RequestDecision{Comment: "ok"})
	if r.status != 200 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	var got api.AccessRequest
	r.decode(t, &got)
	if got.State != api.RequestApproved || got.DecidedBy != "dave" || got.End.Sub(got.Start) != 2*time.Hour || !got.Start.Equal(s.clock.Now()) {
		t.Errorf("approved = %+v; want a 2h window (5h asked, max TTL 2h) from now", got)
	}
	wantError(t, s.do(c["erin"], "POST", api.RequestActionPath(req.ID, "deny"), api.RequestDecision{Comment: "no"}), 403, api.CodeForbidden,
		"was approved by dave already")
	// whoami lists the role granted, as a login does (tunnel status
	// compares the two).
	var who api.Whoami
	s.do(c["bob"], "GET", api.PathWhoami, nil).decode(t, &who)
	if len(who.Roles) != 1 || who.Roles[0] != "dba" || len(who.Logins) != 1 || who.Logins[0] != "postgres" {
		t.Errorf("whoami of bob during his window = %+v; want role dba, login postgres", who)
	}

	var refused int
	evs, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == audit.RequestRefused {
			refused++
		}
	}
	if refused < 2 {
		t.Errorf("%d request.refused events; want one per refused step (at least 2)", refused)
	}
	s.verifyAudit()
}

// TestRequestApproversAtOnce: two approvers deciding the same request at
// the same moment through the API: exactly one decision, the other told
// it was decided already.
func TestRequestApproversAtOnce(t *testing.T) {
	s, c := requestsServer(t)
	for range 5 {
		req := s.createRequest(c["bob"], "dba", time.Hour)
		var (
			wg       sync.WaitGroup
			statuses [2]int
		)
		start := make(chan struct{})
		for i, who := range []string{"dave", "erin"} {
			wg.Go(func() {
				<-start
				action, body := "approve", api.RequestDecision{}
				if i == 1 {
					action, body = "deny", api.RequestDecision{Comment: "no"}
				}
				statuses[i] = s.do(c[who], "POST", api.RequestActionPath(req.ID, action), body).status
			})
		}
		close(start)
		wg.Wait()
		ok, conflict := 0, 0
		for _, st := range statuses {
			switch st {
			case 200:
				ok++
			case 409, 403: // the store's answer, or the check before it
				conflict++
			}
		}
		if ok != 1 || conflict != 1 {
			t.Fatalf("two approvers at once: statuses %v; want one 200 and one refusal", statuses)
		}
	}
	s.verifyAudit()
}

// TestRequestWaitAndRevoke: the long poll answers as soon as the request
// is decided, and at its timeout while pending; a revocation by someone
// who may not is refused, by an approver ends the grant.
func TestRequestWaitAndRevoke(t *testing.T) {
	s, c := requestsServer(t)
	req := s.createRequest(c["bob"], "dba", time.Hour)
	r := s.do(c["bob"], "GET", api.RequestWaitPath(req.ID)+"?timeout=100ms", nil)
	var got api.AccessRequest
	r.decode(t, &got)
	if r.status != 200 || got.State != api.RequestPending {
		t.Fatalf("wait at its timeout: %d %+v; want the pending request", r.status, got)
	}
	done := make(chan api.AccessRequest, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		var w api.AccessRequest
		resp, err := c["bob"].Get(s.ts.URL + api.RequestWaitPath(req.ID) + "?timeout=40s")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&w)
			resp.Body.Close()
		}
		done <- w
	})
	time.Sleep(100 * time.Millisecond) // the wait is most likely under way: either way it must see the approval
	if r := s.do(c["dave"], "POST", api.RequestActionPath(req.ID, "approve"), api.RequestDecision{}); r.status != 200 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	select {
	case w := <-done:
		if w.State != api.RequestApproved {
			t.Errorf("wait answered %+v; want approved", w)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the wait did not answer after the approval")
	}

	wantError(t, s.do(c["carol"], "POST", api.RequestActionPath(req.ID, "revoke"), api.RequestDecision{}), 404, api.CodeNotFound)
	r = s.do(c["erin"], "POST", api.RequestActionPath(req.ID, "revoke"), api.RequestDecision{Comment: "done"})
	r.decode(t, &got)
	if r.status != 200 || got.State != api.RequestRevoked || got.EndedBy != "erin" || got.EndReason != "done" {
		t.Fatalf("revoke: %d %+v", r.status, got)
	}
	wantError(t, s.do(c["erin"], "POST", api.RequestActionPath(req.ID, "revoke"), api.RequestDecision{}), 403, api.CodeForbidden,
		"only an approved request can be revoked")
}
