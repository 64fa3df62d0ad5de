package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// tokenHash returns the stored form of a join token.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// joinToken returns a token for agent created at created, valid for ttl.
func joinToken(token, agent string, created time.Time, ttl time.Duration) store.JoinToken {
	return store.JoinToken{
		Hash:      tokenHash(token),
		Agent:     agent,
		CreatedBy: "admin",
		CreatedAt: created,
		ExpiresAt: created.Add(ttl),
	}
}

func mustCreateToken(t *testing.T, s store.Store, tok store.JoinToken) {
	t.Helper()
	must(t, "CreateJoinToken for "+tok.Agent, s.CreateJoinToken(t.Context(), tok, ev(audit.TokenCreated, tok.Agent)))
}

// enrol consumes the token at now and checks what ConsumeJoinToken returns.
func enrol(t *testing.T, s store.Store, tok store.JoinToken, now time.Time) {
	t.Helper()
	got, err := s.ConsumeJoinToken(t.Context(), tok.Hash, now, evAt(audit.AgentEnrolled, tok.Agent, now))
	must(t, "ConsumeJoinToken for "+tok.Agent, err)
	checkUTC(t, "JoinToken times", got.CreatedAt, got.ExpiresAt, got.UsedAt)
	want := tok
	want.CreatedAt, want.ExpiresAt, want.UsedAt = audit.Normalize(tok.CreatedAt), audit.Normalize(tok.ExpiresAt), audit.Normalize(now)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ConsumeJoinToken returned (-want +got):\n%s", diff)
	}
}

// checkAgent compares GetAgent(want.Name) with want, times normalised.
func checkAgent(t *testing.T, s store.Store, what string, want store.Agent) {
	t.Helper()
	got, err := s.GetAgent(t.Context(), want.Name)
	must(t, "GetAgent "+want.Name, err)
	checkUTC(t, "Agent times", got.CreatedAt, got.EnrolledAt, got.LastSeen)
	if diff := cmp.Diff(normalAgent(want), got); diff != "" {
		t.Errorf("%s: GetAgent(%s) mismatch (-want +got):\n%s", what, want.Name, diff)
	}
}

func normalAgent(a store.Agent) store.Agent {
	a.CreatedAt, a.EnrolledAt = audit.Normalize(a.CreatedAt), audit.Normalize(a.EnrolledAt)
	if !a.LastSeen.IsZero() {
		a.LastSeen = audit.Normalize(a.LastSeen)
	}
	return a
}

// checkMsg fails t unless err's message contains every part.
func checkMsg(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		return // reported by checkErr
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not say %q", what, err, p)
		}
	}
}

func testRoleReach(t *testing.T, s store.Store) {
	ctx := t.Context()
	db := store.Role{
		Name:      "db",
		Logins:    []string{"postgres"},
		Nodes:     []string{"db-*", "bastion", "*-replica"},
		Services:  []string{"db-1/postgres", "*/redis", "cache/*"},
		CreatedAt: t0,
	}
	web := store.Role{Name: "web", Logins: []string{"ubuntu"}, Nodes: []string{"*"}, CreatedAt: t0}
	none := store.Role{Name: "none", Logins: []string{"ubuntu"}, CreatedAt: t0}
	for _, r := range []store.Role{db, web, none} {
		must(t, "CreateRole "+r.Name, s.CreateRole(ctx, r, ev(audit.RoleCreated, r.Name)))
	}
	normal := func(r store.Role) store.Role { r.CreatedAt = audit.Normalize(r.CreatedAt); return r }
	for _, want := range []store.Role{db, web, none} {
		got, err := s.GetRole(ctx, want.Name)
		must(t, "GetRole "+want.Name, err)
		// Nodes and Services keep their order; none means none.
		if diff := cmp.Diff(normal(want), got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("GetRole(%s) mismatch (-want +got):\n%s", want.Name, diff)
		}
	}
	list, err := s.ListRoles(ctx)
	must(t, "ListRoles", err)
	if diff := cmp.Diff([]store.Role{normal(db), normal(none), normal(web)}, list, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ListRoles mismatch (-want +got):\n%s", diff)
	}
}

func testAppendAudits(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.AppendAudits(ctx, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("AppendAudits(nil) = %v, %v; want nothing, nil", got, err)
	}
	got, err = s.AppendAudits(ctx, []audit.Event{})
	if err != nil || len(got) != 0 {
		t.Errorf("AppendAudits(empty) = %v, %v; want nothing, nil", got, err)
	}
	if evs := verified(t, s); len(evs) != 0 {
		t.Fatalf("AppendAudits of nothing appended %d events", len(evs))
	}

	batch := []audit.Event{
		evAt(audit.StreamAllowed, "web-1/db-1/postgres", t0),
		evAt(audit.StreamDenied, "web-2/db-1/postgres", t0.Add(time.Millisecond)),
		evAt(audit.AgentConnected, "web-3", t0.Add(time.Nanosecond)),
	}
	batch[1].Outcome, batch[1].Reason, batch[1].Details = audit.Failure, "denied by rule 3", map[string]string{"rule": "3"}
	first, err := s.AppendAudits(ctx, batch)
	must(t, "AppendAudits", err)
	var want []audit.Event
	var prev *audit.Event
	for _, e := range batch {
		c := audit.Chain(prev, e)
		want = append(want, c)
		prev = &c
	}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("AppendAudits returned (-want +got):\n%s", diff)
	}
	for _, e := range first {
		checkUTC(t, "AppendAudits", e.Time)
	}

	single, err := s.AppendAudit(ctx, ev(audit.LoginSuccess, "alice"))
	must(t, "AppendAudit", err)
	if single.Seq != 4 || single.PrevHash != first[2].Hash {
		t.Errorf("AppendAudit after AppendAudits: Seq %d, PrevHash %q; want 4, %q", single.Seq, single.PrevHash, first[2].Hash)
	}
	second, err := s.AppendAudits(ctx, []audit.Event{ev(audit.StreamAllowed, "a"), ev(audit.StreamAllowed, "b")})
	must(t, "AppendAudits", err)
	if len(second) != 2 || second[0].Seq != 5 || second[0].PrevHash != single.Hash || second[1].PrevHash != second[0].Hash {
		t.Errorf("second AppendAudits = %+v; want events 5 and 6 chained after event 4", second)
	}

	all := verified(t, s)
	if diff := cmp.Diff(append(append(first, single), second...), all, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ListAudit mismatch (-want +got):\n%s", diff)
	}
}

func testAppendAuditsConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const goroutines, batch = 10, 5
	errs := make(chan error, goroutines)
	start := make(chan struct{})
	for i := range goroutines {
		go func() {
			<-start
			var evs []audit.Event
			for j := range batch {
				e := evAt(audit.StreamAllowed, "web-1/db/postgres", t0)
				e.Details = map[string]string{"g": string(rune('a' + i)), "j": string(rune('0' + j))}
				evs = append(evs, e)
			}
			_, err := s.AppendAudits(ctx, evs)
			errs <- err
		}()
	}
	close(start)
	for range goroutines {
		if err := <-errs; err != nil {
			t.Errorf("concurrent AppendAudits: %v", err)
		}
	}
	evs := verified(t, s)
	if len(evs) != goroutines*batch {
		t.Fatalf("the log has %d events; want %d", len(evs), goroutines*batch)
	}
	// A batch is appended whole: its events are consecutive and in order.
	for i := 0; i < len(evs); i += batch {
		for j := range batch {
			e := evs[i+j]
			if e.Details["g"] != evs[i].Details["g"] || e.Details["j"] != string(rune('0'+j)) {
				t.Fatalf("event %d = %v; batches were interleaved", e.Seq, e.Details)
			}
		}
	}
}

func testJoinTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	tok1 := joinToken("token-1", "web-1", t0, time.Hour)
	mustCreateToken(t, s, tok1)
	err := s.CreateJoinToken(ctx, joinToken("token-1", "web-2", t0, time.Hour), ev(audit.TokenCreated, "web-2"))
	checkErr(t, "CreateJoinToken of a recorded hash", err, store.ErrExists)

	_, err = s.GetAgent(ctx, "web-1")
	checkErr(t, "GetAgent before enrolment", err, store.ErrNotFound)

	first := t0.Add(time.Minute) // 14:10:26 UTC
	enrol(t, s, tok1, first)
	web1 := store.Agent{Name: "web-1", CreatedAt: first, EnrolledAt: first}
	checkAgent(t, s, "after the first enrolment", web1)

	// Used once, refused after, even before it expires.
	_, err = s.ConsumeJoinToken(ctx, tok1.Hash, first.Add(time.Second), ev(audit.AgentEnrolled, "web-1"))
	checkErr(t, "ConsumeJoinToken of a used token", err, store.ErrTokenUsed)
	checkMsg(t, "ConsumeJoinToken of a used token", err,
		"already used on 2025-03-14 14:10 UTC", "tunnel admin tokens create --agent web-1")
	checkAgent(t, s, "after a refused token", web1)

	// A second token enrols the agent again: EnrolledAt moves, CreatedAt stays.
	tok2 := joinToken("token-2", "web-1", t0.Add(time.Hour), 24*time.Hour)
	mustCreateToken(t, s, tok2)
	again := t0.Add(2 * time.Hour)
	enrol(t, s, tok2, again)
	web1.EnrolledAt = again
	checkAgent(t, s, "after the second enrolment", web1)

	_, err = s.ConsumeJoinToken(ctx, tokenHash("token-3"), again, ev(audit.AgentEnrolled, "?"))
	checkErr(t, "ConsumeJoinToken of an unknown token", err, store.ErrNotFound)
	checkMsg(t, "ConsumeJoinToken of an unknown token", err, "unknown join token")

	wantTypes := []audit.Type{audit.TokenCreated, audit.AgentEnrolled, audit.TokenCreated, audit.AgentEnrolled}
	evs := verified(t, s)
	if diff := cmp.Diff(wantTypes, types(evs)); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
	// The events are the callers' own.
	if e := evs[3]; e.Subject != "web-1" || !e.Time.Equal(audit.Normalize(again)) {
		t.Errorf("event 4 = %+v; want the caller's agent.enrolled event", e)
	}
}

func testJoinTokenExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	tok := joinToken("token-1", "web-1", t0, 10*time.Minute)
	mustCreateToken(t, s, tok)
	for _, tt := range []struct {
		now time.Time
		ago string
	}{
		{tok.ExpiresAt.Add(3*time.Minute + 10*time.Second), "expired 3m ago"},
		{tok.ExpiresAt, "expired"}, // expired at ExpiresAt
	} {
		_, err := s.ConsumeJoinToken(ctx, tok.Hash, tt.now, ev(audit.AgentEnrolled, "web-1"))
		checkErr(t, "ConsumeJoinToken of an expired token", err, store.ErrTokenExpired)
		checkMsg(t, "ConsumeJoinToken of an expired token", err, tt.ago, "tunnel admin tokens create --agent web-1")
	}
	if _, err := s.GetAgent(ctx, "web-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent after an expired token: %v; want ErrNotFound", err)
	}

	// Valid up to the microsecond before ExpiresAt.
	last := audit.Normalize(tok.ExpiresAt).Add(-time.Microsecond)
	enrol(t, s, tok, last)
	checkAgent(t, s, "after enrolling just in time", store.Agent{Name: "web-1", CreatedAt: last, EnrolledAt: last})

	// Used beats expired: the operator learns the token was used.
	_, err := s.ConsumeJoinToken(ctx, tok.Hash, tok.ExpiresAt.Add(time.Hour), ev(audit.AgentEnrolled, "web-1"))
	checkErr(t, "ConsumeJoinToken of a used, expired token", err, store.ErrTokenUsed)

	if diff := cmp.Diff([]audit.Type{audit.TokenCreated, audit.AgentEnrolled}, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testJoinTokenLockedAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	tokA := joinToken("token-a", "web-1", t0, time.Hour)
	mustCreateToken(t, s, tokA)
	enrol(t, s, tokA, t0)
	must(t, "SetAgentLocked", s.SetAgentLocked(ctx, "web-1", true, ev(audit.AgentLocked, "web-1")))
	web1 := store.Agent{Name: "web-1", Locked: true, CreatedAt: t0, EnrolledAt: t0}
	checkAgent(t, s, "after SetAgentLocked(true)", web1)

	tokB := joinToken("token-b", "web-1", t0, time.Hour)
	mustCreateToken(t, s, tokB)
	_, err := s.ConsumeJoinToken(ctx, tokB.Hash, t0.Add(time.Minute), ev(audit.AgentEnrolled, "web-1"))
	checkErr(t, "ConsumeJoinToken for a locked agent", err, store.ErrLocked)
	checkMsg(t, "ConsumeJoinToken for a locked agent", err, "web-1")
	checkAgent(t, s, "after a refused enrolment", web1)

	// The refusal left the token unused.
	must(t, "SetAgentLocked false", s.SetAgentLocked(ctx, "web-1", false, ev(audit.AgentUnlocked, "web-1")))
	now := t0.Add(2 * time.Minute)
	enrol(t, s, tokB, now)
	web1.Locked, web1.EnrolledAt = false, now
	checkAgent(t, s, "after unlocking and enrolling", web1)

	wantTypes := []audit.Type{audit.TokenCreated, audit.AgentEnrolled, audit.AgentLocked,
		audit.TokenCreated, audit.AgentUnlocked, audit.AgentEnrolled}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testJoinTokenConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	tok := joinToken("token-1", "web-1", t0, time.Hour)
	mustCreateToken(t, s, tok)
	const goroutines = 20
	start := make(chan struct{})
	errs := make(chan error, goroutines)
	for i := range goroutines {
		go func() {
			<-start
			now := t0.Add(time.Duration(i) * time.Millisecond)
			_, err := s.ConsumeJoinToken(ctx, tok.Hash, now, evAt(audit.AgentEnrolled, "web-1", now))
			errs <- err
		}()
	}
	close(start)
	wins := 0
	for range goroutines {
		err := <-errs
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrTokenUsed):
			t.Errorf("concurrent ConsumeJoinToken: %v; want nil or ErrTokenUsed", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d of %d concurrent ConsumeJoinToken calls succeeded; want exactly 1", wins, goroutines)
	}
	if diff := cmp.Diff([]audit.Type{audit.TokenCreated, audit.AgentEnrolled}, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
	agents, err := s.ListAgents(ctx)
	must(t, "ListAgents", err)
	if len(agents) != 1 || !agents[0].CreatedAt.Equal(agents[0].EnrolledAt) {
		t.Errorf("ListAgents = %+v; want web-1 enrolled once", agents)
	}
}

func testAgents(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, name := range []string{"web-2", "db-1", "web-1"} {
		tok := joinToken("token-"+name, name, t0, time.Hour)
		mustCreateToken(t, s, tok)
		enrol(t, s, tok, t0.Add(time.Duration(i)*time.Minute))
	}
	db1 := store.Agent{Name: "db-1", CreatedAt: t0.Add(time.Minute), EnrolledAt: t0.Add(time.Minute)}
	web1 := store.Agent{Name: "web-1", CreatedAt: t0.Add(2 * time.Minute), EnrolledAt: t0.Add(2 * time.Minute)}
	web2 := store.Agent{Name: "web-2", CreatedAt: t0, EnrolledAt: t0}

	seen := t0.Add(time.Hour)
	must(t, "TouchAgent", s.TouchAgent(ctx, "web-1", seen))
	web1.LastSeen = seen
	checkAgent(t, s, "after TouchAgent", web1)
	later := seen.Add(time.Minute)
	must(t, "TouchAgent later", s.TouchAgent(ctx, "web-1", later))
	web1.LastSeen = later
	checkAgent(t, s, "after a later TouchAgent", web1)
	// LastSeen is the latest: a late report of an earlier connection does
	// not move it back.
	must(t, "TouchAgent earlier", s.TouchAgent(ctx, "web-1", seen))
	checkAgent(t, s, "after an earlier TouchAgent", web1)
	checkErr(t, "TouchAgent of an unknown agent", s.TouchAgent(ctx, "ghost", seen), store.ErrNotFound)

	must(t, "SetAgentLocked", s.SetAgentLocked(ctx, "db-1", true, ev(audit.AgentLocked, "db-1")))
	must(t, "SetAgentLocked again", s.SetAgentLocked(ctx, "db-1", true, ev(audit.AgentLocked, "db-1")))
	db1.Locked = true
	checkErr(t, "SetAgentLocked of an unknown agent",
		s.SetAgentLocked(ctx, "ghost", true, ev(audit.AgentLocked, "ghost")), store.ErrNotFound)

	list, err := s.ListAgents(ctx)
	must(t, "ListAgents", err)
	want := []store.Agent{normalAgent(db1), normalAgent(web1), normalAgent(web2)}
	if diff := cmp.Diff(want, list); diff != "" {
		t.Errorf("ListAgents mismatch (-want +got):\n%s", diff)
	}

	// TouchAgent appends nothing; the lock does.
	wantTypes := []audit.Type{audit.TokenCreated, audit.AgentEnrolled, audit.TokenCreated, audit.AgentEnrolled,
		audit.TokenCreated, audit.AgentEnrolled, audit.AgentLocked, audit.AgentLocked}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testPolicyRules(t *testing.T, s store.Store) {
	ctx := t.Context()
	if rules, err := s.ListPolicyRules(ctx); err != nil || len(rules) != 0 {
		t.Errorf("ListPolicyRules of an empty store = %v, %v; want none", rules, err)
	}
	in := []store.PolicyRule{
		{Effect: store.Allow, From: "web-1", To: "db-1/postgres", CreatedBy: "alice", CreatedAt: t0},
		{Effect: store.Deny, From: "*", To: "db-1/*", CreatedBy: "bob", CreatedAt: t0.Add(time.Second)},
		{Effect: store.Allow, From: "*", To: "*/*", CreatedBy: "alice", CreatedAt: t0.Add(time.Minute)},
		// The same From and To with the other effect is another rule.
		{Effect: store.Deny, From: "web-1", To: "db-1/postgres", CreatedBy: "alice", CreatedAt: t0.Add(time.Hour)},
	}
	var added []store.PolicyRule
	for _, r := range in {
		r.ID = 999 // ignored
		got, err := s.AddPolicyRule(ctx, r, ev(audit.PolicyAdded, r.To))
		must(t, "AddPolicyRule", err)
		checkUTC(t, "PolicyRule.CreatedAt", got.CreatedAt)
		if len(added) > 0 && got.ID <= added[len(added)-1].ID {
			t.Errorf("AddPolicyRule gave ID %d after %d; want IDs that grow", got.ID, added[len(added)-1].ID)
		}
		want := r
		want.ID, want.CreatedAt = got.ID, audit.Normalize(r.CreatedAt)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("AddPolicyRule returned (-want +got):\n%s", diff)
		}
		added = append(added, got)
	}
	check := func(what string, want []store.PolicyRule) {
		t.Helper()
		got, err := s.ListPolicyRules(ctx)
		must(t, "ListPolicyRules", err)
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: ListPolicyRules mismatch (-want +got):\n%s", what, diff)
		}
	}
	check("after AddPolicyRule", added)

	dup := in[1]
	dup.CreatedBy, dup.CreatedAt = "carol", t0.Add(2*time.Hour)
	_, err := s.AddPolicyRule(ctx, dup, ev(audit.PolicyAdded, dup.To))
	checkErr(t, "AddPolicyRule of a recorded rule", err, store.ErrExists)
	bad := in[0]
	bad.Effect = "permit"
	_, err = s.AddPolicyRule(ctx, bad, ev(audit.PolicyAdded, bad.To))
	if err == nil || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddPolicyRule with effect %q = %v; want a plain error", bad.Effect, err)
	}
	check("after refused AddPolicyRule calls", added)

	must(t, "DeletePolicyRule", s.DeletePolicyRule(ctx, added[1].ID, ev(audit.PolicyRemoved, added[1].To)))
	check("after DeletePolicyRule", []store.PolicyRule{added[0], added[2], added[3]})
	checkErr(t, "DeletePolicyRule of a deleted rule",
		s.DeletePolicyRule(ctx, added[1].ID, ev(audit.PolicyRemoved, "")), store.ErrNotFound)
	checkErr(t, "DeletePolicyRule of an unknown ID",
		s.DeletePolicyRule(ctx, 12345, ev(audit.PolicyRemoved, "")), store.ErrNotFound)

	// Removing the last rule does not free its ID for the next one, so that
	// removing "rule N" never removes a rule added since.
	last := added[3]
	must(t, "DeletePolicyRule last", s.DeletePolicyRule(ctx, last.ID, ev(audit.PolicyRemoved, last.To)))
	again, err := s.AddPolicyRule(ctx, in[3], ev(audit.PolicyAdded, in[3].To))
	must(t, "AddPolicyRule after DeletePolicyRule", err)
	if again.ID <= last.ID {
		t.Errorf("AddPolicyRule after removing rule %d gave ID %d; want a new, greater ID", last.ID, again.ID)
	}
	check("after re-adding a deleted rule", []store.PolicyRule{added[0], added[2], again})

	wantTypes := []audit.Type{audit.PolicyAdded, audit.PolicyAdded, audit.PolicyAdded, audit.PolicyAdded,
		audit.PolicyRemoved, audit.PolicyRemoved, audit.PolicyAdded}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}
