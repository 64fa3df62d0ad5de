package apiserver_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// TestAuditFilters: type (exact or prefix.*), user (actor or subject)
// and since select events on the gateway; the answer says where its scan
// stopped; malformed filters are refused.
func TestAuditFilters(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	base := s.lastSeq()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	evs := []audit.Event{
		{Time: t0, Type: audit.LoginFailure, Actor: "anonymous", Subject: "bob", Outcome: audit.Failure},
		{Time: t0.Add(time.Minute), Type: audit.LoginSuccess, Actor: "bob", Outcome: audit.Success},
		{Time: t0.Add(2 * time.Minute), Type: audit.RoleCreated, Actor: "boss", Subject: "ops", Outcome: audit.Success},
		{Time: t0.Add(3 * time.Minute), Type: audit.LoginSuccess, Actor: "carol", Outcome: audit.Success},
	}
	if _, err := s.store.AppendAudits(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	last := s.lastSeq()
	get := func(q url.Values) api.AuditEvents {
		t.Helper()
		q.Set("after", fmt.Sprint(base))
		r := s.do(admin, "GET", api.PathAudit+"?"+q.Encode(), nil)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", q.Encode(), r.status, r.body)
		}
		var out api.AuditEvents
		r.decode(t, &out)
		return out
	}
	types := func(out api.AuditEvents) []string {
		var ts []string
		for _, e := range out.Events {
			ts = append(ts, string(e.Type)+"/"+e.Actor)
		}
		return ts
	}
	for _, tc := range []struct {
		q    url.Values
		want string
	}{
		{url.Values{"type": {"login.*"}}, "[login.failure/anonymous login.success/bob login.success/carol]"},
		{url.Values{"type": {"login.success,role.created"}}, "[login.success/bob role.created/boss login.success/carol]"},
		{url.Values{"user": {"Bob"}}, "[login.failure/anonymous login.success/bob]"},
		{url.Values{"type": {"login.*"}, "user": {"bob"}}, "[login.failure/anonymous login.success/bob]"},
		{url.Values{"since": {t0.Add(2 * time.Minute).Format(time.RFC3339)}, "type": {"login.*,role.*"}}, "[role.created/boss login.success/carol]"},
		{url.Values{"type": {"cert.revoked"}}, "[]"},
	} {
		out := get(tc.q)
		if got := fmt.Sprint(types(out)); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.q.Encode(), got, tc.want)
		}
		if out.Next != last {
			t.Errorf("%s: next %d; want %d (the last event scanned)", tc.q.Encode(), out.Next, last)
		}
	}
	// limit stops the scan at the last event returned.
	out := get(url.Values{"type": {"login.*"}, "limit": {"1"}})
	if len(out.Events) != 1 || out.Next != out.Events[0].Seq {
		t.Errorf("limit 1: %d events, next %d; want 1 and its seq", len(out.Events), out.Next)
	}
	// after=end: nothing yet, next is the end.
	r := s.do(admin, "GET", api.PathAudit+"?after=end", nil)
	var end api.AuditEvents
	r.decode(t, &end)
	if len(end.Events) != 0 || end.Next != last {
		t.Errorf("after=end: %d events, next %d; want none and %d", len(end.Events), end.Next, last)
	}
	for _, bad := range []struct{ q, frag string }{
		{"type=login*", "a pattern is a prefix ending in .*"},
		{"since=yesterday", "not an RFC 3339 time"},
		{"wait=forever", "not a duration"},
		{"after=-1", "non-negative event number, or end"},
	} {
		wantError(t, s.do(admin, "GET", api.PathAudit+"?"+bad.q, nil), 400, api.CodeBadRequest, bad.frag)
	}
	// Without filters the answer is the bare list, as before.
	var plain []audit.Event
	s.do(admin, "GET", fmt.Sprintf("%s?after=%d", api.PathAudit, base), nil).decode(t, &plain)
	if len(plain) != len(evs) {
		t.Errorf("plain list: %d events; want %d", len(plain), len(evs))
	}
}

// TestAuditLongPoll: a waiting read answers as soon as an event it
// selects is committed, skipping those it does not; StopWaits (the
// server shutting down) answers waiting reads at once.
func TestAuditLongPoll(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	last := s.lastSeq()
	got := make(chan api.AuditEvents, 1)
	go func() {
		r := s.do(admin, "GET", fmt.Sprintf("%s?after=%d&type=role.created&wait=20s", api.PathAudit, last), nil)
		var out api.AuditEvents
		r.decode(t, &out)
		got <- out
	}()
	time.Sleep(200 * time.Millisecond) // the poll is waiting (or not yet: either way it must find the event)
	if _, err := s.store.AppendAudits(context.Background(), []audit.Event{
		{Time: time.Now(), Type: audit.LoginSuccess, Actor: "bob", Outcome: audit.Success},
		{Time: time.Now(), Type: audit.RoleCreated, Actor: "boss", Subject: "late", Outcome: audit.Success},
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-got:
		if len(out.Events) != 1 || out.Events[0].Subject != "late" || out.Next != last+2 {
			t.Errorf("long poll answered %+v; want the role.created event and next %d", out, last+2)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll did not answer the event committed during its wait")
	}

	s.api.StopWaits()
	s.api.StopWaits()
	done := make(chan api.AuditEvents, 1)
	go func() {
		var out api.AuditEvents
		s.do(admin, "GET", fmt.Sprintf("%s?after=end&wait=20s", api.PathAudit), nil).decode(t, &out)
		done <- out
	}()
	select {
	case out := <-done:
		if len(out.Events) != 0 {
			t.Errorf("after StopWaits: %+v", out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a long poll after StopWaits still waits")
	}
}
