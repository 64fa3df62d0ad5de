package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// requestsEnv: a gateway, the agent web-1, the role dba (SSH to web-*
// as the current OS user) that nobody holds, the role oncall-lead that
// approves dba, and the users bob (no role), dave (oncall-lead) and carol
// (no role).
type requestsEnv struct {
	c                       *cluster
	admin, bob, dave, carol *user
	login                   string
}

func newRequestsEnv(t *testing.T) *requestsEnv {
	t.Helper()
	e := &requestsEnv{login: testenv.CurrentUser(t)}
	e.c = startCluster(t, "--login-burst", "1000")
	e.admin = e.c.adminUser()
	e.admin.login()
	e.admin.must("admin", "roles", "add", "dba", "--login", e.login, "--node", "web-*", "--max-ttl", "1h")
	e.admin.must("admin", "roles", "add", "oncall-lead", "--approve", "dba")
	e.bob = addUser(t, e.admin, "bob")
	e.dave = addUser(t, e.admin, "dave", "oncall-lead")
	e.carol = addUser(t, e.admin, "carol")
	for _, u := range []*user{e.bob, e.dave, e.carol} {
		u.login()
	}
	e.c.startAgent("web-1", e.admin.token("web-1"), "")
	e.admin.waitOnline("web-1", true, 20*time.Second)
	return e
}

// pendingOf waits for u's one pending request and returns it.
func pendingOf(t *testing.T, u *user) api.AccessRequest {
	t.Helper()
	var got api.AccessRequest
	waitFor(t, 20*time.Second, "a pending request of "+u.name, func() bool {
		var rs []api.AccessRequest
		if err := json.Unmarshal([]byte(u.must("request", "ls", "--json")), &rs); err != nil {
			t.Fatalf("request ls --json: %v", err)
		}
		for _, r := range rs {
			if r.User == u.name && r.State == api.RequestPending {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// TestAccessRequests walks a just-in-time request through its life with
// the real binaries: bob asks for dba and waits; he cannot approve his own
// request, nor can carol (no approving role); dave approves; bob's wait
// returns, his next login carries dba, tunnel ls shows web-1 and tunnel
// ssh works; dave revokes and bob's live session closes with the reason.
// A second request expires at the end of its window and closes bob's
// session, saying so; a third is denied and bob's wait fails with dave's
// comment. request ls --json shows every state, and the audit log every
// step.
func TestAccessRequests(t *testing.T) {
	e := newRequestsEnv(t)
	bob, dave, carol := e.bob, e.dave, e.carol

	if out, _, _ := bob.run("ls"); strings.Contains(out, "web-1") {
		t.Fatalf("bob sees web-1 before any request: %q", out)
	}
	if _, se, err := bob.run("ssh", e.login+"@web-1", "true"); err == nil || !strings.Contains(se, "none of your roles allows web-1") {
		t.Fatalf("bob's ssh before any request: %v, %q; want refused", err, se)
	}

	// 1. Ask, wait, approve.
	wait, _ := bob.backgroundOut("request", "create", "--role", "dba", "--for", "30m", "--reason", "INC-123: fix replication", "--wait", "--json")
	r1 := pendingOf(t, bob)
	if r1.Role != "dba" || r1.Reason != "INC-123: fix replication" || time.Duration(r1.Duration) != 30*time.Minute {
		t.Fatalf("bob's request = %+v", r1)
	}
	if se := bob.fails("request", "approve", r1.ID); !strings.Contains(se, "you cannot approve or deny your own request") {
		t.Errorf("bob approving his own request: %q", se)
	}
	if se := carol.fails("request", "approve", r1.ID); !strings.Contains(se, "no access request "+r1.ID) {
		t.Errorf("carol approving a request she may not see: %q", se)
	}
	if se := e.admin.fails("request", "approve", r1.ID); !strings.Contains(se, "none of your roles may decide requests for role dba") {
		t.Errorf("an admin without an approving role approving: %q", se)
	}
	var daveSees []api.AccessRequest
	if err := json.Unmarshal([]byte(dave.must("request", "ls", "--json")), &daveSees); err != nil {
		t.Fatal(err)
	}
	if len(daveSees) != 1 || daveSees[0].ID != r1.ID || !daveSees[0].CanDecide {
		t.Errorf("dave's request ls = %+v; want bob's request, his to decide", daveSees)
	}
	if code, out := wait(time.Second); code != -2 {
		t.Fatalf("bob's --wait returned before any decision: %d %q", code, out)
	}
	if out := dave.must("request", "approve", r1.ID, "--comment", "go ahead"); !strings.Contains(out, "Approved request "+r1.ID) {
		t.Errorf("request approve printed %q", out)
	}
	code, out := wait(30 * time.Second)
	if code != 0 || !strings.Contains(out, `"state": "approved"`) || !strings.Contains(out, `"decided_by": "dave"`) {
		t.Fatalf("bob's request create --wait: exit %d, %q; want the approval", code, out)
	}
	if se := dave.fails("request", "deny", r1.ID, "--comment", "changed my mind"); !strings.Contains(se, "approved by dave already") {
		t.Errorf("deciding a decided request: %q", se)
	}

	// 2. The next login carries dba; tunnel ls shows web-1; ssh works.
	bob.login()
	p, err := profile.Dir{Path: bob.home}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.Roles, "dba") || !slices.Contains(p.Logins, e.login) {
		t.Errorf("bob's login after the approval: roles %v logins %v; want dba and %s", p.Roles, p.Logins, e.login)
	}
	if out := bob.must("ls"); !strings.Contains(out, "web-1") {
		t.Errorf("bob's tunnel ls after the approval: %q; want web-1", out)
	}
	sshWait, sshOut := bob.backgroundOut("ssh", e.login+"@web-1", "echo started-remote; sleep 120")
	waitFor(t, 20*time.Second, "the remote command to start", func() bool { return strings.Contains(sshOut(), "started-remote") })

	// 3. Revoke: the live session closes with the reason.
	if se := carol.fails("request", "revoke", r1.ID); !strings.Contains(se, "no access request "+r1.ID) {
		t.Errorf("carol revoking: %q", se)
	}
	dave.must("request", "revoke", r1.ID, "--comment", "incident closed")
	code, out = sshWait(20 * time.Second)
	wantReason := "your access request " + r1.ID + " for role dba was revoked by dave (incident closed)"
	if code == 0 || code == -2 || !strings.Contains(out, wantReason) {
		t.Errorf("bob's ssh after the revocation: exit %d, %q; want it cut with %q", code, out, wantReason)
	}
	if _, se, err := bob.run("ssh", e.login+"@web-1", "true"); err == nil || !strings.Contains(se, "none of your roles allows web-1") {
		t.Errorf("bob's ssh after the revocation: %v, %q; want refused", err, se)
	}

	// 4. Expiry: a short window ends by itself and closes the session.
	bob.background("request", "create", "--role", "dba", "--for", "25s", "--reason", "INC-124", "--wait")
	r2 := pendingOf(t, bob)
	dave.must("request", "approve", r2.ID)
	sshWait, sshOut = bob.backgroundOut("ssh", e.login+"@web-1", "echo started-remote; sleep 120")
	waitFor(t, 20*time.Second, "the remote command to start", func() bool { return strings.Contains(sshOut(), "started-remote") })
	code, out = sshWait(90 * time.Second)
	wantReason = "your access request " + r2.ID + " for role dba expired at "
	if code == 0 || code == -2 || !strings.Contains(out, wantReason) {
		t.Errorf("bob's ssh at the end of the window: exit %d, %q; want it cut with %q", code, out, wantReason)
	}
	var shown api.AccessRequest
	waitFor(t, 20*time.Second, "request "+r2.ID+" to be marked expired", func() bool {
		if err := json.Unmarshal([]byte(bob.must("request", "show", r2.ID, "--json")), &shown); err != nil {
			t.Fatal(err)
		}
		return shown.State == api.RequestExpired
	})

	// 5. Deny: the waiting requester is told, with the comment.
	wait, _ = bob.backgroundOut("request", "create", "--role", "dba", "--for", "1h", "--reason", "INC-125", "--wait")
	r3 := pendingOf(t, bob)
	if se := dave.fails("request", "deny", r3.ID); !strings.Contains(se, "--comment") {
		t.Errorf("deny without a comment: %q", se)
	}
	dave.must("request", "deny", r3.ID, "--comment", "use the read-only role")
	code, out = wait(30 * time.Second)
	if code == 0 || code == -2 || !strings.Contains(out, "request "+r3.ID+` was denied by dave ("use the read-only role")`) {
		t.Errorf("bob's --wait after the denial: exit %d, %q", code, out)
	}

	// 6. States, as JSON.
	var all []api.AccessRequest
	if err := json.Unmarshal([]byte(bob.must("request", "ls", "--all", "--json")), &all); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, r := range all {
		states[r.ID] = r.State
	}
	want := map[string]string{r1.ID: api.RequestRevoked, r2.ID: api.RequestExpired, r3.ID: api.RequestDenied}
	for id, st := range want {
		if states[id] != st {
			t.Errorf("request ls --all --json: %s is %q; want %q (all: %v)", id, states[id], st, states)
		}
	}

	// 7. Every step is in the audit log, and the chain holds.
	var evs []audit.Event
	if err := json.Unmarshal([]byte(e.admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	seen := map[audit.Type]int{}
	for _, ev := range evs {
		seen[ev.Type]++
	}
	for typ, n := range map[audit.Type]int{audit.RequestCreated: 3, audit.RequestApproved: 2, audit.RequestDenied: 1,
		audit.RequestRevoked: 1, audit.RequestExpired: 1} {
		if seen[typ] != n {
			t.Errorf("audit log has %d %s events; want %d", seen[typ], typ, n)
		}
	}
	if seen[audit.RequestRefused] == 0 {
		t.Error("audit log has no request.refused event for the refused approvals")
	}
	if out := e.admin.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify: %q", out)
	}
}

// TestAccessRequestWaitAcrossRestart: tunnel request create --wait keeps
// waiting while the gateway restarts (it polls again after the failure)
// and returns the approval made after the restart.
func TestAccessRequestWaitAcrossRestart(t *testing.T) {
	e := newRequestsEnv(t)
	wait, _ := e.bob.backgroundOut("request", "create", "--role", "dba", "--for", "10m", "--reason", "INC-200", "--wait")
	r := pendingOf(t, e.bob)
	time.Sleep(500 * time.Millisecond) // let the long poll start
	if err := e.c.stop(); err != nil {
		t.Logf("gateway stop: %v", err)
	}
	time.Sleep(2 * time.Second) // the waiting client meets a gateway that is gone
	if code, out := wait(time.Millisecond); code != -2 {
		t.Fatalf("--wait gave up while the gateway was down: exit %d, %q", code, out)
	}
	e.c.restart()
	e.dave.must("request", "approve", r.ID, "--comment", "after the restart")
	code, out := wait(60 * time.Second)
	if code != 0 || !strings.Contains(out, "Request "+r.ID+` approved by dave ("after the restart")`) {
		t.Errorf("--wait across a restart: exit %d, %q; want the approval", code, out)
	}
}
