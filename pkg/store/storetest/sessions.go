package storetest

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// newSession returns an active session of user on node created at created,
// with an hour to run.
func newSession(id, user, node string, created time.Time) store.Session {
	return store.Session{
		ID:         id,
		User:       user,
		Node:       node,
		Login:      "ubuntu",
		CreatedAt:  created,
		Deadline:   created.Add(time.Hour),
		State:      store.SessionActive,
		SourceIP:   "198.51.100.7",
		CertSerial: "c0" + id,
	}
}

// sessionCert returns the SSH user certificate issued for ss.
func sessionCert(ss store.Session) store.IssuedCert {
	return store.IssuedCert{
		Serial:      ss.CertSerial,
		Kind:        store.CertSSHUser,
		Subject:     ss.User,
		SubjectKind: identity.User,
		NotBefore:   ss.CreatedAt.Add(-time.Minute),
		NotAfter:    ss.Deadline,
		IssuedAt:    ss.CreatedAt,
		Principals:  []string{ss.Login},
	}
}

// mustCreateSession creates ss with its certificate and the two events.
func mustCreateSession(t *testing.T, s store.Store, ss store.Session) store.Session {
	t.Helper()
	must(t, "CreateSession "+ss.ID, s.CreateSession(t.Context(), ss, []store.IssuedCert{sessionCert(ss)},
		[]audit.Event{evAt(audit.CertIssued, ss.CertSerial, ss.CreatedAt), evAt(audit.SessionCreated, ss.ID, ss.CreatedAt)}))
	return normalSession(ss)
}

// normalSession returns ss as a store gives it back.
func normalSession(ss store.Session) store.Session {
	ss.CreatedAt, ss.Deadline = audit.Normalize(ss.CreatedAt), audit.Normalize(ss.Deadline)
	if !ss.EndedAt.IsZero() {
		ss.EndedAt = audit.Normalize(ss.EndedAt)
	}
	return ss
}

// normalCert returns c as a store gives it back.
func normalCert(c store.IssuedCert) store.IssuedCert {
	c.NotBefore, c.NotAfter, c.IssuedAt = audit.Normalize(c.NotBefore), audit.Normalize(c.NotAfter), audit.Normalize(c.IssuedAt)
	if !c.RevokedAt.IsZero() {
		c.RevokedAt = audit.Normalize(c.RevokedAt)
	}
	return c
}

// checkSession compares GetSession(want.ID) with want.
func checkSession(t *testing.T, s store.Store, what string, want store.Session) {
	t.Helper()
	got, err := s.GetSession(t.Context(), want.ID)
	must(t, what+": GetSession "+want.ID, err)
	checkUTC(t, "Session times", got.CreatedAt, got.Deadline, got.EndedAt)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: GetSession(%s) mismatch (-want +got):\n%s", what, want.ID, diff)
	}
}

// checkCert compares GetCertificate of want's kind and serial with want.
func checkCert(t *testing.T, s store.Store, what string, want store.IssuedCert) {
	t.Helper()
	got, err := s.GetCertificate(t.Context(), want.Kind, want.Serial)
	must(t, what+": GetCertificate "+want.Serial, err)
	checkUTC(t, "IssuedCert times", got.NotBefore, got.NotAfter, got.IssuedAt, got.RevokedAt)
	if diff := cmp.Diff(normalCert(want), got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: GetCertificate(%s, %s) mismatch (-want +got):\n%s", what, want.Kind, want.Serial, diff)
	}
}

func sessionIDs(list []store.Session) []string {
	var ids []string
	for _, ss := range list {
		ids = append(ids, ss.ID)
	}
	return ids
}

func certSerials(list []store.IssuedCert) []string {
	var serials []string
	for _, c := range list {
		serials = append(serials, string(c.Kind)+"/"+c.Serial)
	}
	return serials
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetSession(ctx, "nope")
	checkErr(t, "GetSession of an unknown ID", err, store.ErrNotFound)

	in := newSession("s-1_A.b~", "alice", "web-1", t0)
	in.BytesIn, in.BytesOut = 3, 4
	in.Recording = true // ignored: there is no recording yet
	cert := sessionCert(in)
	must(t, "CreateSession", s.CreateSession(ctx, in, []store.IssuedCert{cert},
		[]audit.Event{ev(audit.CertIssued, cert.Serial), ev(audit.SessionCreated, in.ID)}))
	want := normalSession(in)
	want.Recording = false
	checkSession(t, s, "after CreateSession", want)
	checkCert(t, s, "after CreateSession", cert)

	// An empty state means active.
	implicit := newSession("s-2", "bob", "db-1", t0.Add(time.Second))
	implicit.State = ""
	must(t, "CreateSession with no state", s.CreateSession(ctx, implicit, nil, []audit.Event{ev(audit.SessionCreated, "s-2")}))
	implicit.State = store.SessionActive
	checkSession(t, s, "after CreateSession with no state", normalSession(implicit))

	before := verified(t, s)

	// A duplicate session ID records neither the session nor its
	// certificates.
	dup := newSession(in.ID, "mallory", "db-1", t0.Add(time.Minute))
	dup.CertSerial = "dd01"
	dupCerts := []store.IssuedCert{sessionCert(dup), {Serial: "dd02", Kind: store.CertX509, Subject: "mallory", SubjectKind: identity.User, NotBefore: t0, NotAfter: t0.Add(time.Hour), IssuedAt: t0}}
	err = s.CreateSession(ctx, dup, dupCerts, []audit.Event{ev(audit.CertIssued, "dd01"), ev(audit.SessionCreated, dup.ID)})
	checkErr(t, "CreateSession with a duplicate ID", err, store.ErrExists)
	for _, c := range dupCerts {
		_, err := s.GetCertificate(ctx, c.Kind, c.Serial)
		checkErr(t, "GetCertificate of a certificate of a refused session", err, store.ErrNotFound)
	}
	checkSession(t, s, "after a duplicate CreateSession", want)

	// A duplicate certificate records neither the session nor the other
	// certificates.
	third := newSession("s-3", "alice", "web-1", t0.Add(2*time.Second))
	err = s.CreateSession(ctx, third, []store.IssuedCert{sessionCert(third), cert},
		[]audit.Event{ev(audit.SessionCreated, third.ID)})
	checkErr(t, "CreateSession with a recorded certificate", err, store.ErrExists)
	_, err = s.GetSession(ctx, third.ID)
	checkErr(t, "GetSession of a session whose certificate was a duplicate", err, store.ErrNotFound)
	_, err = s.GetCertificate(ctx, store.CertSSHUser, third.CertSerial)
	checkErr(t, "GetCertificate of a refused session's certificate", err, store.ErrNotFound)

	// Sessions that are not new, or not bounded, are refused.
	bad := map[string]func(*store.Session){
		"empty ID":        func(ss *store.Session) { ss.ID = "" },
		"ID with a slash": func(ss *store.Session) { ss.ID = "a/b" },
		"ID with a space": func(ss *store.Session) { ss.ID = "a b" },
		"long ID":         func(ss *store.Session) { ss.ID = string(bytes.Repeat([]byte("a"), 129)) },
		"ended state":     func(ss *store.Session) { ss.State = store.SessionClosed },
		"unknown state":   func(ss *store.Session) { ss.State = "paused" },
		"ended at":        func(ss *store.Session) { ss.EndedAt = t0 },
		"no deadline":     func(ss *store.Session) { ss.Deadline = time.Time{} },
		"no user":         func(ss *store.Session) { ss.User = "" },
		"no node":         func(ss *store.Session) { ss.Node = "" },
		"no login":        func(ss *store.Session) { ss.Login = "" },
		"negative bytes":  func(ss *store.Session) { ss.BytesIn = -1 },
	}
	for name, edit := range bad {
		ss := newSession("s-bad", "alice", "web-1", t0)
		edit(&ss)
		if err := s.CreateSession(ctx, ss, []store.IssuedCert{sessionCert(ss)}, []audit.Event{ev(audit.SessionCreated, ss.ID)}); err == nil {
			t.Errorf("CreateSession with %s succeeded", name)
		}
	}
	// A long ID up to the limit is fine.
	long := newSession(string(bytes.Repeat([]byte("a"), 128)), "alice", "web-1", t0.Add(3*time.Second))
	mustCreateSession(t, s, long)

	after := verified(t, s)
	if diff := cmp.Diff(before, after[:len(before)], cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("refused CreateSession calls changed the log (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff([]audit.Type{audit.CertIssued, audit.SessionCreated, audit.SessionCreated, audit.CertIssued, audit.SessionCreated},
		types(after)); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
	list, err := s.ListSessions(ctx, store.SessionFilter{})
	must(t, "ListSessions", err)
	if diff := cmp.Diff([]string{long.ID, "s-2", in.ID}, sessionIDs(list)); diff != "" {
		t.Errorf("ListSessions after refused calls (-want +got):\n%s", diff)
	}
}

func testSessionLocked(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateRole(t, s, "dev", "ubuntu")
	mustCreateUser(t, s, "alice", "dev")
	mustCreateUser(t, s, "bob", "dev")
	must(t, "SetUserLocked", s.SetUserLocked(ctx, "bob", true, ev(audit.UserLocked, "bob")))
	tok := joinToken("t", "db-1", t0, time.Hour)
	mustCreateToken(t, s, tok)
	enrol(t, s, tok, t0)
	must(t, "SetAgentLocked", s.SetAgentLocked(ctx, "db-1", true, ev(audit.AgentLocked, "db-1")))
	before := verified(t, s)

	for _, ss := range []store.Session{newSession("s-bob", "bob", "web-1", t0), newSession("s-db", "alice", "db-1", t0)} {
		err := s.CreateSession(ctx, ss, []store.IssuedCert{sessionCert(ss)}, []audit.Event{ev(audit.SessionCreated, ss.ID)})
		checkErr(t, "CreateSession of "+ss.User+" on "+ss.Node, err, store.ErrLocked)
		_, err = s.GetSession(ctx, ss.ID)
		checkErr(t, "GetSession of a refused session", err, store.ErrNotFound)
		_, err = s.GetCertificate(ctx, store.CertSSHUser, ss.CertSerial)
		checkErr(t, "GetCertificate of a refused session's certificate", err, store.ErrNotFound)
	}
	if diff := cmp.Diff(before, verified(t, s), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("refused sessions changed the log (-before +after):\n%s", diff)
	}
	// Unlocked (or unknown to the store) users and agents are fine.
	mustCreateSession(t, s, newSession("s-ok", "alice", "web-1", t0))
	must(t, "SetAgentLocked false", s.SetAgentLocked(ctx, "db-1", false, ev(audit.AgentUnlocked, "db-1")))
	mustCreateSession(t, s, newSession("s-db", "alice", "db-1", t0))
	verified(t, s)
}

func testListSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Created out of order, so that newest first is not insertion order.
	for _, ss := range []store.Session{
		newSession("c", "alice", "web-1", t0.Add(3*time.Minute)),
		newSession("a", "alice", "web-1", t0.Add(1*time.Minute)),
		newSession("e", "bob", "db-1", t0.Add(5*time.Minute)),
		newSession("b", "bob", "web-1", t0.Add(2*time.Minute)),
		newSession("d", "alice", "db-1", t0.Add(4*time.Minute)),
	} {
		mustCreateSession(t, s, ss)
	}
	_, err := s.EndSession(ctx, "d", store.SessionClosed, "closed by the client", t0.Add(6*time.Minute), ev(audit.SessionEnded, "d"))
	must(t, "EndSession d", err)
	_, err = s.EndSession(ctx, "b", store.SessionExpired, "session expired", t0.Add(6*time.Minute), ev(audit.SessionEnded, "b"))
	must(t, "EndSession b", err)

	tests := []struct {
		f    store.SessionFilter
		want []string
	}{
		{store.SessionFilter{}, []string{"e", "d", "c", "b", "a"}},
		{store.SessionFilter{Limit: 2}, []string{"e", "d"}},
		{store.SessionFilter{Limit: 10}, []string{"e", "d", "c", "b", "a"}},
		{store.SessionFilter{User: "alice"}, []string{"d", "c", "a"}},
		{store.SessionFilter{Node: "web-1"}, []string{"c", "b", "a"}},
		{store.SessionFilter{User: "alice", Node: "db-1"}, []string{"d"}},
		{store.SessionFilter{ActiveOnly: true}, []string{"e", "c", "a"}},
		{store.SessionFilter{ActiveOnly: true, User: "alice"}, []string{"c", "a"}},
		{store.SessionFilter{ActiveOnly: true, User: "alice", Limit: 1}, []string{"c"}},
		{store.SessionFilter{ActiveOnly: true, Node: "db-1"}, []string{"e"}},
		{store.SessionFilter{User: "carol"}, nil},
		{store.SessionFilter{User: "alice", Node: "nowhere"}, nil},
	}
	for _, tt := range tests {
		got, err := s.ListSessions(ctx, tt.f)
		must(t, "ListSessions", err)
		if diff := cmp.Diff(tt.want, sessionIDs(got)); diff != "" {
			t.Errorf("ListSessions(%+v) (-want +got):\n%s", tt.f, diff)
		}
		for _, ss := range got {
			one, err := s.GetSession(ctx, ss.ID)
			must(t, "GetSession", err)
			if diff := cmp.Diff(one, ss); diff != "" {
				t.Errorf("ListSessions(%+v) gives session %s unlike GetSession (-get +list):\n%s", tt.f, ss.ID, diff)
			}
		}
	}
	verified(t, s)
}

func testEndSession(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustCreateSession(t, s, newSession("a", "alice", "web-1", t0))
	b := mustCreateSession(t, s, newSession("b", "bob", "web-1", t0))
	end := t0.Add(10 * time.Minute)

	got, err := s.EndSession(ctx, "a", store.SessionRevoked, "access revoked by an administrator", end, ev(audit.SessionRevoked, "a"))
	must(t, "EndSession", err)
	a.State, a.EndedAt, a.EndReason = store.SessionRevoked, audit.Normalize(end), "access revoked by an administrator"
	checkUTC(t, "EndSession", got.EndedAt)
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("EndSession returned (-want +got):\n%s", diff)
	}
	checkSession(t, s, "after EndSession", a)
	checkSession(t, s, "the other session after EndSession", b)
	before := verified(t, s)

	// Ending it again, in any state, changes nothing and appends nothing.
	for _, st := range []store.SessionState{store.SessionRevoked, store.SessionExpired, store.SessionClosed} {
		got, err := s.EndSession(ctx, "a", st, "again", end.Add(time.Hour), ev(audit.SessionEnded, "a"))
		must(t, "EndSession of an ended session", err)
		if diff := cmp.Diff(a, got); diff != "" {
			t.Errorf("EndSession(%s) of an ended session returned (-want +got):\n%s", st, diff)
		}
	}
	checkSession(t, s, "after ending it again", a)

	_, err = s.EndSession(ctx, "ghost", store.SessionClosed, "closed by the client", end, ev(audit.SessionEnded, "ghost"))
	checkErr(t, "EndSession of an unknown session", err, store.ErrNotFound)
	for _, st := range []store.SessionState{store.SessionActive, "", "paused"} {
		if _, err := s.EndSession(ctx, "b", st, "x", end, ev(audit.SessionEnded, "b")); err == nil {
			t.Errorf("EndSession in state %q succeeded", st)
		}
	}
	if _, err := s.EndSession(ctx, "b", store.SessionClosed, "x", time.Time{}, ev(audit.SessionEnded, "b")); err == nil {
		t.Errorf("EndSession with no end time succeeded")
	}
	checkSession(t, s, "after refused EndSession calls", b)
	if diff := cmp.Diff(before, verified(t, s), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("EndSession of an ended, unknown or bad session changed the log (-before +after):\n%s", diff)
	}

	got, err = s.EndSession(ctx, "b", store.SessionClosed, "closed by the client", end, ev(audit.SessionEnded, "b"))
	must(t, "EndSession b", err)
	if got.State != store.SessionClosed || got.EndReason != "closed by the client" || !got.EndedAt.Equal(audit.Normalize(end)) {
		t.Errorf("EndSession(b) = %+v; want closed by the client at %v", got, end)
	}
	wantTypes := []audit.Type{audit.CertIssued, audit.SessionCreated, audit.CertIssued, audit.SessionCreated,
		audit.SessionRevoked, audit.SessionEnded}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testEndSessionConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateSession(t, s, newSession("a", "alice", "web-1", t0))
	const goroutines = 10
	results := make([]store.Session, goroutines)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range goroutines {
		wg.Go(func() {
			<-start
			st := store.SessionExpired
			if i%2 == 1 {
				st = store.SessionRevoked
			}
			got, err := s.EndSession(ctx, "a", st, string(st), t0.Add(time.Duration(i)*time.Second), ev(audit.SessionEnded, "a"))
			if err != nil {
				t.Errorf("concurrent EndSession: %v", err)
			}
			results[i] = got
		})
	}
	close(start)
	wg.Wait()
	final, err := s.GetSession(ctx, "a")
	must(t, "GetSession", err)
	if final.State == store.SessionActive || final.EndReason != string(final.State) {
		t.Errorf("after concurrent EndSession, the session is %+v", final)
	}
	for i, got := range results {
		if diff := cmp.Diff(final, got); diff != "" {
			t.Errorf("EndSession %d returned a session unlike the stored one (-stored +returned):\n%s", i, diff)
		}
	}
	if evs := verified(t, s); len(evs) != 3 {
		t.Errorf("concurrent EndSession calls appended %d events; want 1", len(evs)-2)
	}
}

func testSessionBytes(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustCreateSession(t, s, newSession("a", "alice", "web-1", t0))
	before := verified(t, s)

	must(t, "AddSessionBytes", s.AddSessionBytes(ctx, "a", 100, 2000))
	must(t, "AddSessionBytes", s.AddSessionBytes(ctx, "a", 0, 0))
	must(t, "AddSessionBytes", s.AddSessionBytes(ctx, "a", 1<<40, 5))
	a.BytesIn, a.BytesOut = 100+1<<40, 2005
	checkSession(t, s, "after AddSessionBytes", a)

	// The last counts may arrive after the end.
	ended, err := s.EndSession(ctx, "a", store.SessionClosed, "closed by the client", t0.Add(time.Minute), ev(audit.SessionEnded, "a"))
	must(t, "EndSession", err)
	must(t, "AddSessionBytes after the end", s.AddSessionBytes(ctx, "a", 1, 1))
	ended.BytesIn, ended.BytesOut = ended.BytesIn+1, ended.BytesOut+1
	checkSession(t, s, "after AddSessionBytes after the end", ended)

	checkErr(t, "AddSessionBytes of an unknown session", s.AddSessionBytes(ctx, "ghost", 1, 1), store.ErrNotFound)
	if err := s.AddSessionBytes(ctx, "a", -1, 0); err == nil {
		t.Errorf("AddSessionBytes of a negative count succeeded")
	}
	checkSession(t, s, "after refused AddSessionBytes", ended)

	// Only EndSession appended an event.
	evs := verified(t, s)
	if diff := cmp.Diff(before, evs[:len(before)], cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("the log changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff([]audit.Type{audit.SessionEnded}, types(evs[len(before):])); diff != "" {
		t.Errorf("events appended since the session was created (-want +got):\n%s", diff)
	}
}

func testRevokeCertificates(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := t0.Add(2 * time.Hour)
	cert := func(kind store.CertKind, serial, subject string, notAfter, revoked time.Time) store.IssuedCert {
		return store.IssuedCert{Serial: serial, Kind: kind, Subject: subject, SubjectKind: kindOf(subject), NotBefore: t0, NotAfter: notAfter,
			IssuedAt: t0, Principals: []string{subject}, RevokedAt: revoked}
	}
	live, expired := now.Add(6*time.Hour), now.Add(-time.Hour)
	var (
		aliceSSH     = cert(store.CertSSHUser, "a1", "alice", live, time.Time{})
		aliceX509    = cert(store.CertX509, "a2", "alice", live, time.Time{})
		aliceExpired = cert(store.CertSSHUser, "a3", "alice", expired, time.Time{})
		aliceAtNow   = cert(store.CertSSHUser, "a4", "alice", now, time.Time{}) // expires at now: expired
		aliceRevoked = cert(store.CertSSHUser, "a5", "alice", live, t0.Add(time.Hour))
		bobSSH       = cert(store.CertSSHUser, "b1", "bob", live, time.Time{})
		bobSSH2      = cert(store.CertSSHUser, "b2", "bob", live, time.Time{})
		webX509      = cert(store.CertX509, "w1", "web-1", live, time.Time{})
		webHost      = cert(store.CertSSHHost, "w2", "web-1", live, time.Time{})
		sameSerial   = cert(store.CertX509, "b1", "bob", live, time.Time{}) // b1 in another kind
		// The agent alice shares the user alice's name: never revoked with her.
		agentAlice = store.IssuedCert{Serial: "aa1", Kind: store.CertX509, Subject: "alice", SubjectKind: identity.Agent,
			NotBefore: t0, NotAfter: live, IssuedAt: t0, Principals: []string{"tunnel://prod/agent/alice"}}
	)
	all := []*store.IssuedCert{&aliceSSH, &aliceX509, &aliceExpired, &aliceAtNow, &aliceRevoked, &bobSSH, &bobSSH2, &webX509, &webHost, &sameSerial, &agentAlice}
	var certs []store.IssuedCert
	for _, c := range all {
		certs = append(certs, *c)
	}
	must(t, "RecordCertificates", s.RecordCertificates(ctx, certs, []audit.Event{ev(audit.CertIssued, "batch")}))
	checkAll := func(what string) {
		t.Helper()
		for _, c := range all {
			checkCert(t, s, what, *c)
		}
	}
	revoke := func(what string, f store.RevokeFilter, at time.Time, want ...*store.IssuedCert) {
		t.Helper()
		got, err := s.RevokeCertificates(ctx, f, at, ev(audit.CertRevoked, f.Subject+f.Serial))
		must(t, what, err)
		var wantCerts []store.IssuedCert
		for _, c := range want {
			c.RevokedAt = at
			wantCerts = append(wantCerts, normalCert(*c))
		}
		for _, c := range got {
			checkUTC(t, what, c.NotBefore, c.NotAfter, c.IssuedAt, c.RevokedAt)
		}
		if diff := cmp.Diff(wantCerts, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: RevokeCertificates(%+v) returned (-want +got):\n%s", what, f, diff)
		}
		checkAll(what)
	}
	logLen := func() int { return len(verified(t, s)) }

	// By subject: only the unexpired, unrevoked certificates of alice, of
	// every kind, by kind and serial.
	n := logLen()
	revoke("revoke alice", store.RevokeFilter{Subject: "alice", SubjectKind: identity.User}, now, &aliceSSH, &aliceX509)
	if got := logLen(); got != n+1 {
		t.Errorf("revoking alice appended %d events; want 1", got-n)
	}
	// Again: nothing left, no event.
	n = logLen()
	revoke("revoke alice again", store.RevokeFilter{Subject: "alice", SubjectKind: identity.User}, now.Add(time.Minute))
	if got := logLen(); got != n {
		t.Errorf("revoking alice again appended %d events; want 0", got-n)
	}

	// By subject and kind.
	revoke("revoke web-1 x509", store.RevokeFilter{Subject: "web-1", SubjectKind: identity.Agent, Kind: store.CertX509}, now, &webX509)
	// The agent alice, apart from the user alice.
	revoke("revoke the agent alice", store.RevokeFilter{Subject: "alice", SubjectKind: identity.Agent}, now, &agentAlice)
	// By serial: every kind with that serial, or one kind.
	revoke("revoke serial b1 ssh-user", store.RevokeFilter{Serial: "b1", Kind: store.CertSSHUser}, now, &bobSSH)
	revoke("revoke serial b1", store.RevokeFilter{Serial: "b1"}, now, &sameSerial)
	n = logLen()
	revoke("revoke serial b1 again", store.RevokeFilter{Serial: "b1"}, now)
	revoke("revoke an expired serial", store.RevokeFilter{Serial: "a3"}, now)
	if got := logLen(); got != n {
		t.Errorf("revoking nothing appended %d events; want 0", got-n)
	}

	// Unknown serials, and filters that select everything, are refused.
	_, err := s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "ffff"}, now, ev(audit.CertRevoked, "ffff"))
	checkErr(t, "RevokeCertificates of an unknown serial", err, store.ErrNotFound)
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "w2", Kind: store.CertSSHUser}, now, ev(audit.CertRevoked, "w2"))
	checkErr(t, "RevokeCertificates of a serial of another kind", err, store.ErrNotFound)
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "b2", Subject: "alice", SubjectKind: identity.User}, now, ev(audit.CertRevoked, "b2"))
	checkErr(t, "RevokeCertificates of a serial of another subject", err, store.ErrNotFound)
	// A subject without its kind could name either principal: refused.
	for _, f := range []store.RevokeFilter{{}, {Kind: store.CertSSHUser}, {Subject: "bob"}, {Subject: "bob", SubjectKind: "gateway"}} {
		if _, err := s.RevokeCertificates(ctx, f, now, ev(audit.CertRevoked, "")); err == nil {
			t.Errorf("RevokeCertificates(%+v) succeeded; want a refusal", f)
		}
	}
	if got := logLen(); got != n {
		t.Errorf("refused revocations appended %d events; want 0", got-n)
	}
	checkAll("after refused revocations")

	// A certificate revoked with its session's creation counts too.
	ss := newSession("s", "carol", "web-1", now)
	c := sessionCert(ss)
	must(t, "CreateSession", s.CreateSession(ctx, ss, []store.IssuedCert{c}, []audit.Event{ev(audit.SessionCreated, "s")}))
	revoke("revoke a session's certificate", store.RevokeFilter{Serial: c.Serial}, now.Add(time.Minute), &c)

	wantTypes := []audit.Type{audit.CertIssued, audit.CertRevoked, audit.CertRevoked, audit.CertRevoked,
		audit.CertRevoked, audit.CertRevoked, audit.SessionCreated, audit.CertRevoked}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testRevokedCertificates(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got, err := s.RevokedCertificates(ctx, t0); err != nil || len(got) != 0 {
		t.Errorf("RevokedCertificates of an empty store = %v, %v; want none", got, err)
	}
	cert := func(kind store.CertKind, serial, subject string, notAfter time.Time) store.IssuedCert {
		return store.IssuedCert{Serial: serial, Kind: kind, Subject: subject, SubjectKind: kindOf(subject), NotBefore: t0, NotAfter: notAfter, IssuedAt: t0}
	}
	certs := []store.IssuedCert{
		cert(store.CertSSHUser, "01", "alice", t0.Add(time.Hour)),
		cert(store.CertSSHUser, "02", "alice", t0.Add(3*time.Hour)),
		cert(store.CertX509, "03", "alice", t0.Add(3*time.Hour)),
		cert(store.CertX509, "04", "web-1", t0.Add(3*time.Hour)),
		cert(store.CertSSHUser, "05", "bob", t0.Add(3*time.Hour)), // not revoked
	}
	// One recorded as revoked already.
	preRevoked := cert(store.CertSSHHost, "06", "web-2", t0.Add(2*time.Hour))
	preRevoked.RevokedAt = t0.Add(time.Minute)
	certs = append(certs, preRevoked)
	must(t, "RecordCertificates", s.RecordCertificates(ctx, certs, []audit.Event{ev(audit.CertIssued, "batch")}))

	at := t0.Add(30 * time.Minute)
	_, err := s.RevokeCertificates(ctx, store.RevokeFilter{Subject: "alice", SubjectKind: identity.User}, at, ev(audit.CertRevoked, "alice"))
	must(t, "RevokeCertificates alice", err)
	_, err = s.RevokeCertificates(ctx, store.RevokeFilter{Serial: "04"}, at, ev(audit.CertRevoked, "04"))
	must(t, "RevokeCertificates 04", err)

	for _, tt := range []struct {
		now  time.Time
		want []string
	}{
		{at, []string{"ssh-host/06", "ssh-user/01", "ssh-user/02", "x509/03", "x509/04"}},
		{t0.Add(time.Hour - time.Microsecond), []string{"ssh-host/06", "ssh-user/01", "ssh-user/02", "x509/03", "x509/04"}},
		{t0.Add(time.Hour), []string{"ssh-host/06", "ssh-user/02", "x509/03", "x509/04"}}, // 01 expires
		{t0.Add(2 * time.Hour), []string{"ssh-user/02", "x509/03", "x509/04"}},
		{t0.Add(3 * time.Hour), nil},
	} {
		got, err := s.RevokedCertificates(ctx, tt.now)
		must(t, "RevokedCertificates", err)
		if diff := cmp.Diff(tt.want, certSerials(got)); diff != "" {
			t.Errorf("RevokedCertificates(%v) (-want +got):\n%s", tt.now, diff)
		}
		for _, c := range got {
			checkUTC(t, "RevokedCertificates", c.NotBefore, c.NotAfter, c.IssuedAt, c.RevokedAt)
			if c.RevokedAt.IsZero() {
				t.Errorf("RevokedCertificates gives %s/%s with no RevokedAt", c.Kind, c.Serial)
			}
			stored, err := s.GetCertificate(ctx, c.Kind, c.Serial)
			must(t, "GetCertificate", err)
			if diff := cmp.Diff(stored, c, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("RevokedCertificates gives %s/%s unlike GetCertificate (-get +revoked):\n%s", c.Kind, c.Serial, diff)
			}
		}
	}
	verified(t, s)
}

func testRecordings(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustCreateSession(t, s, newSession("a", "alice", "web-1", t0))
	b := mustCreateSession(t, s, newSession("b", "bob", "web-1", t0.Add(time.Second)))
	before := verified(t, s)

	_, err := s.GetRecording(ctx, "a")
	checkErr(t, "GetRecording before SaveRecording", err, store.ErrNotFound)
	_, err = s.GetRecording(ctx, "ghost")
	checkErr(t, "GetRecording of an unknown session", err, store.ErrNotFound)
	checkErr(t, "SaveRecording of an unknown session", s.SaveRecording(ctx, "ghost", []byte("sealed")), store.ErrNotFound)
	if err := s.SaveRecording(ctx, "a", nil); err == nil {
		t.Errorf("SaveRecording of an empty recording succeeded")
	}
	checkSession(t, s, "after refused SaveRecording calls", a)

	first := []byte("sealed recording/a \x00\x01\xff")
	must(t, "SaveRecording", s.SaveRecording(ctx, "a", first))
	first[0] = 'X' // the store keeps its own copy
	got, err := s.GetRecording(ctx, "a")
	must(t, "GetRecording", err)
	if want := "sealed recording/a \x00\x01\xff"; string(got) != want {
		t.Errorf("GetRecording = %q; want %q", got, want)
	}
	a.Recording = true
	checkSession(t, s, "after SaveRecording", a)
	checkSession(t, s, "the other session after SaveRecording", b)

	// A new recording replaces the old one, and survives the session's end.
	second := bytes.Repeat([]byte{0xab}, 1<<20)
	must(t, "SaveRecording again", s.SaveRecording(ctx, "a", second))
	got, err = s.GetRecording(ctx, "a")
	must(t, "GetRecording", err)
	if !bytes.Equal(got, second) {
		t.Errorf("GetRecording after a replacement gave %d bytes; want the %d new ones", len(got), len(second))
	}
	ended, err := s.EndSession(ctx, "a", store.SessionClosed, "closed by the client", t0.Add(time.Minute), ev(audit.SessionEnded, "a"))
	must(t, "EndSession", err)
	if !ended.Recording {
		t.Errorf("EndSession returned Recording false for a recorded session")
	}
	must(t, "SaveRecording after the end", s.SaveRecording(ctx, "a", []byte("final")))
	if got, err := s.GetRecording(ctx, "a"); err != nil || string(got) != "final" {
		t.Errorf("GetRecording = %q, %v; want final", got, err)
	}
	_, err = s.GetRecording(ctx, "b")
	checkErr(t, "GetRecording of the other session", err, store.ErrNotFound)

	list, err := s.ListSessions(ctx, store.SessionFilter{})
	must(t, "ListSessions", err)
	if len(list) != 2 || list[0].ID != "b" || list[0].Recording || list[1].ID != "a" || !list[1].Recording {
		t.Errorf("ListSessions = %+v; want b without a recording, a with one", list)
	}
	evs := verified(t, s)
	if len(evs) != len(before)+1 {
		t.Errorf("SaveRecording appended events: the log has %d; want %d", len(evs), len(before)+1)
	}
	// The caller records the recording on its own.
	_, err = s.AppendAudit(ctx, ev(audit.RecordingSaved, "a"))
	must(t, "AppendAudit", err)
	verified(t, s)
}

// testSessionAuditChain runs the whole life of a session and checks the
// chain and the callers' events.
func testSessionAuditChain(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateRole(t, s, "dev", "ubuntu")
	mustCreateUser(t, s, "alice", "dev")
	ss := mustCreateSession(t, s, newSession("a", "alice", "web-1", t0))
	must(t, "AddSessionBytes", s.AddSessionBytes(ctx, "a", 10, 20))
	must(t, "SetUserLocked", s.SetUserLocked(ctx, "alice", true, ev(audit.UserLocked, "alice")))
	revoked, err := s.RevokeCertificates(ctx, store.RevokeFilter{Subject: "alice", SubjectKind: identity.User}, t0.Add(time.Minute), ev(audit.CertRevoked, "alice"))
	must(t, "RevokeCertificates", err)
	if len(revoked) != 1 || revoked[0].Serial != ss.CertSerial {
		t.Errorf("RevokeCertificates = %+v; want the session's certificate", revoked)
	}
	end := ev(audit.SessionRevoked, "a")
	end.Details = map[string]string{"reason": "user locked"}
	_, err = s.EndSession(ctx, "a", store.SessionRevoked, "access revoked by an administrator", t0.Add(time.Minute), end)
	must(t, "EndSession", err)
	must(t, "SaveRecording", s.SaveRecording(ctx, "a", []byte("sealed")))
	_, err = s.AppendAudit(ctx, ev(audit.RecordingSaved, "a"))
	must(t, "AppendAudit", err)
	_, err = s.EndSession(ctx, "a", store.SessionClosed, "closed by the client", t0.Add(2*time.Minute), ev(audit.SessionEnded, "a"))
	must(t, "EndSession again", err)

	evs := verified(t, s)
	wantTypes := []audit.Type{audit.RoleCreated, audit.UserCreated, audit.CertIssued, audit.SessionCreated,
		audit.UserLocked, audit.CertRevoked, audit.SessionRevoked, audit.RecordingSaved}
	if diff := cmp.Diff(wantTypes, types(evs)); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
	if got := evs[6]; got.Subject != "a" || got.Details["reason"] != "user locked" || got.SourceIP != "192.0.2.1" {
		t.Errorf("event 7 = %+v; want the caller's session.revoked event", got)
	}
	final, err := s.GetSession(ctx, "a")
	must(t, "GetSession", err)
	if final.State != store.SessionRevoked || !final.Recording || final.BytesIn != 10 || final.BytesOut != 20 {
		t.Errorf("GetSession = %+v; want revoked, recorded, 10 bytes in, 20 out", final)
	}
}

// kindOf classifies the test's subjects: web-* are agents, the rest users.
func kindOf(subject string) identity.Kind {
	if strings.HasPrefix(subject, "web-") {
		return identity.Agent
	}
	return identity.User
}
