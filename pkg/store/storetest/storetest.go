// Package storetest is the conformance suite every [store.Store]
// implementation must pass, so that callers never see which one they have.
//
// Call [Run] from the implementation's tests with a function that opens a
// fresh, empty store for each subtest (and closes it with t.Cleanup):
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "gateway.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Besides what store.Store documents, the suite holds implementations to:
//
//   - times come back in UTC, truncated to microseconds ([audit.Normalize]);
//   - User.Roles is a set: its order is not significant, and GetUser/ListUsers
//     may return it sorted; Role.Logins, Role.Nodes, Role.Services and
//     IssuedCert.Principals keep their order; empty lists and maps may come
//     back nil;
//   - ListUsers, ListRoles and ListAgents are sorted by name;
//   - errors wrap store.ErrNotFound for an unknown user (also from
//     AcceptTOTPStep), role, meta key, certificate, agent (also from
//     TouchAgent), join token or policy rule ID, and store.ErrExists for a
//     duplicate user, role, certificate, join token hash or policy rule, a
//     role still held and a second Initialize;
//   - a join token expires at ExpiresAt (now must be before it); a used
//     token is reported used even once expired; a refused token (for any
//     reason, a locked agent included) stays as it was; the refusals say
//     what happened and how to go on (the date a token was used, how long
//     ago it expired, "tunnel admin tokens create --agent NAME");
//   - TouchAgent and AcceptTOTPStep append no event; an agent's LastSeen
//     never moves back;
//   - policy rule IDs grow and are never reused, even after the last rule
//     is removed;
//   - a mutating call that fails changes nothing and appends no event, and
//     the events that succeeding calls append form a chain that
//     [audit.Verify] accepts against AuditHead;
//   - ReserveLoginAttempt restarts an ended lockout's counter at 1, sets
//     LockedUntil to now+lockout when the count reaches max, appends no
//     event, and reserves at most max attempts however many run at once;
//   - errors wrap store.ErrNotFound for an unknown session (also from
//     EndSession, AddSessionBytes and SaveRecording), a missing recording
//     and a RevokeFilter.Serial that matches no certificate, and
//     store.ErrExists for a duplicate session ID;
//   - ListSessions is newest first; ending an ended session returns it as
//     it is and appends nothing; AddSessionBytes and SaveRecording append
//     no event, nor does a RevokeCertificates that finds nothing to revoke;
//   - a certificate expires at NotAfter (RevokeCertificates and
//     RevokedCertificates skip it from then on); RevokeCertificates and
//     RevokedCertificates return certificates by kind, then serial, and
//     RevokeCertificates emits one ChangeCert per certificate it revokes,
//     in that order.
//
// Tests that need to tamper with the stored log belong with the
// implementation, which has raw access to its storage.
package storetest

import (
	"context"
	"errors"
	"slices"
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

// Run runs the conformance suite against the stores open returns, a fresh
// empty one per subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Initialize", testInitialize},
		{"Users", testUsers},
		{"UserUpdates", testUserUpdates},
		{"UnknownUser", testUnknownUser},
		{"Roles", testRoles},
		{"DeleteRoleHeld", testDeleteRoleHeld},
		{"TOTPStep", testTOTPStep},
		{"TOTPStepConcurrent", testTOTPStepConcurrent},
		{"LoginFailures", testLoginFailures},
		{"LoginFailuresConcurrent", testLoginFailuresConcurrent},
		{"UpdateRole", testUpdateRole},
		{"SetUserRoles", testSetUserRoles},
		{"Certificates", testCertificates},
		{"AuditAppend", testAuditAppend},
		{"AuditChain", testAuditChain},
		{"AuditFilter", testAuditFilter},
		{"AuditConcurrent", testAuditConcurrent},
		{"FailedCallsChangeNothing", testFailedCallsChangeNothing},
		{"RoleReach", testRoleReach},
		{"AppendAudits", testAppendAudits},
		{"AppendAuditsConcurrent", testAppendAuditsConcurrent},
		{"JoinTokens", testJoinTokens},
		{"JoinTokenExpired", testJoinTokenExpired},
		{"JoinTokenLockedAgent", testJoinTokenLockedAgent},
		{"JoinTokenConcurrent", testJoinTokenConcurrent},
		{"Agents", testAgents},
		{"PolicyRules", testPolicyRules},
		{"Sessions", testSessions},
		{"SessionLocked", testSessionLocked},
		{"ListSessions", testListSessions},
		{"EndSession", testEndSession},
		{"EndSessionConcurrent", testEndSessionConcurrent},
		{"SessionBytes", testSessionBytes},
		{"RevokeCertificates", testRevokeCertificates},
		{"RevokedCertificates", testRevokedCertificates},
		{"Recordings", testRecordings},
		{"SessionAuditChain", testSessionAuditChain},
		{"Gateways", testGateways},
		{"Watch", testWatch},
		{"CloseTwice", testCloseTwice},
		{"Network", testNetwork},
		{"Requests", testRequests},
		{"Sealed", testSealed},
		{"Snapshot", testSnapshot},
		{"ClaimJob", testClaimJob},
		{"CARotation", testCARotation},
		{"CertChanges", testCertChanges},
		{"RoleSources", testRoleSources},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// t0 has nanoseconds and a zone, so that round trips show truncation to
// microseconds and conversion to UTC.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))

// ev returns an event of type typ done by admin to subject.
func ev(typ audit.Type, subject string) audit.Event {
	return audit.Event{
		Time:     t0,
		Type:     typ,
		Actor:    "admin",
		Subject:  subject,
		Outcome:  audit.Success,
		SourceIP: "192.0.2.1",
	}
}

// evAt is ev at time tm.
func evAt(typ audit.Type, subject string, tm time.Time) audit.Event {
	e := ev(typ, subject)
	e.Time = tm
	return e
}

// userOpts compares users with their roles as sets.
var userOpts = cmp.Options{
	cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b string) bool { return a < b }),
}

// checkUTC fails t for every time not in UTC.
func checkUTC(t *testing.T, what string, times ...time.Time) {
	t.Helper()
	for _, tm := range times {
		if tm.Location() != time.UTC {
			t.Errorf("%s: time %v is in %v; want UTC", what, tm, tm.Location())
		}
	}
}

// checkErr fails t unless err wraps want.
func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v; want one wrapping %q", what, err, want)
	}
}

// must fails t now if err is not nil.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// verified returns the whole log after checking that it verifies against
// the recorded head and that its seqs run 1..n.
func verified(t *testing.T, s store.Store) []audit.Event {
	t.Helper()
	ctx := t.Context()
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	must(t, "ListAudit", err)
	head, err := s.AuditHead(ctx)
	must(t, "AuditHead", err)
	if err := audit.Verify(evs, head); err != nil {
		t.Fatalf("audit.Verify(ListAudit, AuditHead) = %v; want nil", err)
	}
	if len(evs) > 0 && head != evs[len(evs)-1].Hash {
		t.Fatalf("AuditHead = %q; want the last event's hash %q", head, evs[len(evs)-1].Hash)
	}
	if len(evs) == 0 && head != "" {
		t.Fatalf("AuditHead of an empty log = %q; want \"\"", head)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has Seq %d; want %d", i, e.Seq, i+1)
		}
		checkUTC(t, "audit event time", e.Time)
	}
	return evs
}

// types returns the types of evs, in order.
func types(evs []audit.Event) []audit.Type {
	var ts []audit.Type
	for _, e := range evs {
		ts = append(ts, e.Type)
	}
	return ts
}

func mustCreateRole(t *testing.T, s store.Store, name string, logins ...string) store.Role {
	t.Helper()
	r := store.Role{Name: name, Logins: logins, MaxTTL: 8 * time.Hour, CreatedAt: t0}
	must(t, "CreateRole "+name, s.CreateRole(t.Context(), r, ev(audit.RoleCreated, name)))
	return r
}

func mustCreateUser(t *testing.T, s store.Store, name string, roles ...string) store.User {
	t.Helper()
	u := store.User{
		Name:         name,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		TOTPSecret:   []byte("sealed totp/" + name),
		Roles:        roles,
		CreatedAt:    t0,
	}
	must(t, "CreateUser "+name, s.CreateUser(t.Context(), u, ev(audit.UserCreated, name)))
	return u
}

// stored returns u as a store gives it back.
func stored(u store.User) store.User {
	u.CreatedAt = audit.Normalize(u.CreatedAt)
	return u
}

func testInitialize(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetMeta(ctx, "cluster")
	checkErr(t, "GetMeta before Initialize", err, store.ErrNotFound)

	meta := map[string]string{"cluster": "prod", "created": "2025-03-14"}
	keys := []store.CAKey{
		{Kind: "x509", Public: []byte{0x30, 0x82, 0x01}, SealedPrivate: []byte("sealed ca/x509"), CreatedAt: t0, Active: true},
		{Kind: "ssh-user", Public: []byte("ssh-ed25519 user"), SealedPrivate: []byte("sealed ca/ssh-user"), CreatedAt: t0.Add(time.Second), Active: true},
		{Kind: "ssh-host", Public: []byte("ssh-ed25519 host"), SealedPrivate: []byte("sealed ca/ssh-host"), CreatedAt: t0.Add(-time.Hour), Active: false},
	}
	must(t, "Initialize", s.Initialize(ctx, meta, keys, ev(audit.ClusterInit, "prod")))

	for k, want := range meta {
		got, err := s.GetMeta(ctx, k)
		if err != nil || got != want {
			t.Errorf("GetMeta(%q) = %q, %v; want %q, nil", k, got, err, want)
		}
	}
	_, err = s.GetMeta(ctx, "nope")
	checkErr(t, "GetMeta of a missing key", err, store.ErrNotFound)

	wantKeys := slices.Clone(keys)
	for i := range wantKeys {
		wantKeys[i].CreatedAt = audit.Normalize(wantKeys[i].CreatedAt)
	}
	checkKeys := func(what string) {
		t.Helper()
		got, err := s.CAKeys(ctx)
		must(t, "CAKeys", err)
		for _, k := range got {
			checkUTC(t, "CAKey.CreatedAt", k.CreatedAt)
		}
		byKind := cmpopts.SortSlices(func(a, b store.CAKey) bool { return a.Kind < b.Kind })
		if diff := cmp.Diff(wantKeys, got, byKind); diff != "" {
			t.Errorf("%s: CAKeys mismatch (-want +got):\n%s", what, diff)
		}
	}
	checkKeys("after Initialize")

	err = s.Initialize(ctx, map[string]string{"cluster": "other"}, keys[:1], ev(audit.ClusterInit, "other"))
	checkErr(t, "second Initialize", err, store.ErrExists)
	if got, _ := s.GetMeta(ctx, "cluster"); got != "prod" {
		t.Errorf("after a second Initialize, GetMeta(cluster) = %q; want %q", got, "prod")
	}
	checkKeys("after a second Initialize")
	if diff := cmp.Diff([]audit.Type{audit.ClusterInit}, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateRole(t, s, "ops", "ubuntu", "root")
	mustCreateRole(t, s, "dev", "ubuntu")
	bob := mustCreateUser(t, s, "bob", "ops", "dev")
	alice := mustCreateUser(t, s, "alice", "dev")
	carol := mustCreateUser(t, s, "carol") // no roles
	dave := store.User{Name: "dave", PasswordHash: "h", Locked: true, TOTPLastStep: 42, CreatedAt: t0.Add(-time.Hour)}
	must(t, "CreateUser dave", s.CreateUser(ctx, dave, ev(audit.UserCreated, "dave")))

	for _, want := range []store.User{alice, bob, carol, dave} {
		got, err := s.GetUser(ctx, want.Name)
		must(t, "GetUser "+want.Name, err)
		checkUTC(t, "User.CreatedAt", got.CreatedAt)
		if diff := cmp.Diff(stored(want), got, userOpts); diff != "" {
			t.Errorf("GetUser(%q) mismatch (-want +got):\n%s", want.Name, diff)
		}
	}

	list, err := s.ListUsers(ctx)
	must(t, "ListUsers", err)
	want := []store.User{stored(alice), stored(bob), stored(carol), stored(dave)}
	if diff := cmp.Diff(want, list, userOpts); diff != "" {
		t.Errorf("ListUsers mismatch (-want +got):\n%s", diff)
	}

	err = s.CreateUser(ctx, store.User{Name: "alice", PasswordHash: "other", CreatedAt: t0}, ev(audit.UserCreated, "alice"))
	checkErr(t, "CreateUser of an existing name", err, store.ErrExists)

	err = s.CreateUser(ctx, store.User{Name: "erin", Roles: []string{"dev", "nosuchrole"}, CreatedAt: t0}, ev(audit.UserCreated, "erin"))
	checkErr(t, "CreateUser with an unknown role", err, store.ErrNotFound)
	if err != nil && !strings.Contains(err.Error(), "nosuchrole") {
		t.Errorf("CreateUser with an unknown role: error %q does not name the role", err)
	}
	_, err = s.GetUser(ctx, "erin")
	checkErr(t, "GetUser after a failed CreateUser", err, store.ErrNotFound)

	must(t, "DeleteUser bob", s.DeleteUser(ctx, "bob", ev(audit.UserDeleted, "bob")))
	_, err = s.GetUser(ctx, "bob")
	checkErr(t, "GetUser of a deleted user", err, store.ErrNotFound)
	list, err = s.ListUsers(ctx)
	must(t, "ListUsers", err)
	var names []string
	for _, u := range list {
		names = append(names, u.Name)
	}
	if diff := cmp.Diff([]string{"alice", "carol", "dave"}, names); diff != "" {
		t.Errorf("ListUsers after DeleteUser (-want +got):\n%s", diff)
	}
	// bob held ops: with bob gone, nobody does.
	must(t, "DeleteRole ops", s.DeleteRole(ctx, "ops", ev(audit.RoleDeleted, "ops")))

	wantTypes := []audit.Type{audit.RoleCreated, audit.RoleCreated, audit.UserCreated, audit.UserCreated,
		audit.UserCreated, audit.UserCreated, audit.UserDeleted, audit.RoleDeleted}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testUserUpdates(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateRole(t, s, "dev", "ubuntu")
	alice := stored(mustCreateUser(t, s, "alice", "dev"))
	check := func(what string) {
		t.Helper()
		got, err := s.GetUser(ctx, "alice")
		must(t, "GetUser", err)
		if diff := cmp.Diff(alice, got, userOpts); diff != "" {
			t.Errorf("after %s, GetUser mismatch (-want +got):\n%s", what, diff)
		}
	}

	must(t, "SetUserLocked true", s.SetUserLocked(ctx, "alice", true, ev(audit.UserLocked, "alice")))
	alice.Locked = true
	check("SetUserLocked(true)")
	must(t, "SetUserLocked true again", s.SetUserLocked(ctx, "alice", true, ev(audit.UserLocked, "alice")))
	check("SetUserLocked(true) twice")
	must(t, "SetUserLocked false", s.SetUserLocked(ctx, "alice", false, ev(audit.UserUnlocked, "alice")))
	alice.Locked = false
	check("SetUserLocked(false)")

	if ok, err := s.AcceptTOTPStep(ctx, "alice", 1000); !ok || err != nil {
		t.Fatalf("AcceptTOTPStep(1000) = %v, %v; want true, nil", ok, err)
	}
	alice.TOTPLastStep = 1000
	check("AcceptTOTPStep")
	must(t, "ResetMFA", s.ResetMFA(ctx, "alice", []byte("new sealed secret"), ev(audit.UserMFAReset, "alice")))
	alice.TOTPSecret, alice.TOTPLastStep = []byte("new sealed secret"), 0
	check("ResetMFA")
	if ok, err := s.AcceptTOTPStep(ctx, "alice", 1); !ok || err != nil {
		t.Errorf("after ResetMFA, AcceptTOTPStep(1) = %v, %v; want true, nil", ok, err)
	}
	alice.TOTPLastStep = 1

	must(t, "SetPasswordHash", s.SetPasswordHash(ctx, "alice", "$argon2id$v=19$new", ev(audit.PasswordRehashed, "alice")))
	alice.PasswordHash = "$argon2id$v=19$new"
	check("SetPasswordHash")

	wantTypes := []audit.Type{audit.RoleCreated, audit.UserCreated, audit.UserLocked, audit.UserLocked,
		audit.UserUnlocked, audit.UserMFAReset, audit.PasswordRehashed}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testUnknownUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	calls := []struct {
		name string
		call func() error
	}{
		{"GetUser", func() error { _, err := s.GetUser(ctx, "ghost"); return err }},
		{"DeleteUser", func() error { return s.DeleteUser(ctx, "ghost", ev(audit.UserDeleted, "ghost")) }},
		{"SetUserLocked", func() error { return s.SetUserLocked(ctx, "ghost", true, ev(audit.UserLocked, "ghost")) }},
		{"ResetMFA", func() error { return s.ResetMFA(ctx, "ghost", []byte("x"), ev(audit.UserMFAReset, "ghost")) }},
		{"SetPasswordHash", func() error { return s.SetPasswordHash(ctx, "ghost", "x", ev(audit.PasswordRehashed, "ghost")) }},
		{"AcceptTOTPStep", func() error {
			ok, err := s.AcceptTOTPStep(ctx, "ghost", 1)
			if ok {
				t.Errorf("AcceptTOTPStep of an unknown user accepted the step")
			}
			return err
		}},
		{"GetRole", func() error { _, err := s.GetRole(ctx, "ghost"); return err }},
		{"DeleteRole", func() error { return s.DeleteRole(ctx, "ghost", ev(audit.RoleDeleted, "ghost")) }},
		{"GetCertificate", func() error { _, err := s.GetCertificate(ctx, store.CertX509, "ff"); return err }},
		{"GetMeta", func() error { _, err := s.GetMeta(ctx, "ghost"); return err }},
		{"GetAgent", func() error { _, err := s.GetAgent(ctx, "ghost"); return err }},
		{"SetAgentLocked", func() error { return s.SetAgentLocked(ctx, "ghost", true, ev(audit.AgentLocked, "ghost")) }},
		{"TouchAgent", func() error { return s.TouchAgent(ctx, "ghost", t0) }},
		{"ConsumeJoinToken", func() error {
			_, err := s.ConsumeJoinToken(ctx, tokenHash("ghost"), t0, ev(audit.AgentEnrolled, "ghost"))
			return err
		}},
		{"DeletePolicyRule", func() error { return s.DeletePolicyRule(ctx, 1, ev(audit.PolicyRemoved, "1")) }},
	}
	for _, c := range calls {
		checkErr(t, c.name, c.call(), store.ErrNotFound)
	}
	if evs := verified(t, s); len(evs) != 0 {
		t.Errorf("failed calls appended %d events; want none", len(evs))
	}
	users, err := s.ListUsers(ctx)
	must(t, "ListUsers", err)
	roles, err := s.ListRoles(ctx)
	must(t, "ListRoles", err)
	agents, err := s.ListAgents(ctx)
	must(t, "ListAgents", err)
	rules, err := s.ListPolicyRules(ctx)
	must(t, "ListPolicyRules", err)
	if len(users) != 0 || len(roles) != 0 || len(agents) != 0 || len(rules) != 0 {
		t.Errorf("an empty store lists %d users, %d roles, %d agents and %d policy rules; want none",
			len(users), len(roles), len(agents), len(rules))
	}
}

func testRoles(t *testing.T, s store.Store) {
	ctx := t.Context()
	ops := store.Role{Name: "ops", Logins: []string{"ubuntu", "root", "admin"}, MaxTTL: 90 * time.Minute, Admin: true, CreatedAt: t0}
	dev := store.Role{Name: "dev", MaxTTL: 0, CreatedAt: t0.Add(time.Nanosecond)}
	must(t, "CreateRole ops", s.CreateRole(ctx, ops, ev(audit.RoleCreated, "ops")))
	must(t, "CreateRole dev", s.CreateRole(ctx, dev, ev(audit.RoleCreated, "dev")))
	ops.CreatedAt, dev.CreatedAt = audit.Normalize(ops.CreatedAt), audit.Normalize(dev.CreatedAt)

	got, err := s.GetRole(ctx, "ops")
	must(t, "GetRole ops", err)
	checkUTC(t, "Role.CreatedAt", got.CreatedAt)
	// Logins keep their order.
	if diff := cmp.Diff(ops, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("GetRole(ops) mismatch (-want +got):\n%s", diff)
	}
	list, err := s.ListRoles(ctx)
	must(t, "ListRoles", err)
	if diff := cmp.Diff([]store.Role{dev, ops}, list, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ListRoles mismatch (-want +got):\n%s", diff)
	}

	err = s.CreateRole(ctx, store.Role{Name: "ops", CreatedAt: t0}, ev(audit.RoleCreated, "ops"))
	checkErr(t, "CreateRole of an existing name", err, store.ErrExists)
	if got, _ := s.GetRole(ctx, "ops"); !got.Admin {
		t.Errorf("a failed CreateRole changed the existing role: %+v", got)
	}

	must(t, "DeleteRole dev", s.DeleteRole(ctx, "dev", ev(audit.RoleDeleted, "dev")))
	_, err = s.GetRole(ctx, "dev")
	checkErr(t, "GetRole of a deleted role", err, store.ErrNotFound)
	checkErr(t, "DeleteRole of a deleted role", s.DeleteRole(ctx, "dev", ev(audit.RoleDeleted, "dev")), store.ErrNotFound)

	wantTypes := []audit.Type{audit.RoleCreated, audit.RoleCreated, audit.RoleDeleted}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testDeleteRoleHeld(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateRole(t, s, "ops", "root")
	mustCreateUser(t, s, "alice", "ops")

	err := s.DeleteRole(ctx, "ops", ev(audit.RoleDeleted, "ops"))
	checkErr(t, "DeleteRole of a held role", err, store.ErrExists)
	if err != nil && !strings.Contains(err.Error(), "alice") {
		t.Errorf("DeleteRole of a held role: error %q does not name the holder alice", err)
	}
	if _, err := s.GetRole(ctx, "ops"); err != nil {
		t.Errorf("GetRole after a refused DeleteRole: %v", err)
	}
	u, err := s.GetUser(ctx, "alice")
	must(t, "GetUser", err)
	if diff := cmp.Diff([]string{"ops"}, u.Roles); diff != "" {
		t.Errorf("roles of alice after a refused DeleteRole (-want +got):\n%s", diff)
	}

	must(t, "DeleteUser", s.DeleteUser(ctx, "alice", ev(audit.UserDeleted, "alice")))
	must(t, "DeleteRole once nobody holds it", s.DeleteRole(ctx, "ops", ev(audit.RoleDeleted, "ops")))
	wantTypes := []audit.Type{audit.RoleCreated, audit.UserCreated, audit.UserDeleted, audit.RoleDeleted}
	if diff := cmp.Diff(wantTypes, types(verified(t, s))); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
}

func testTOTPStep(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, "alice")
	steps := []struct {
		step int64
		want bool
	}{
		{58000000, true},
		{58000000, false}, // the same code again: a replay
		{57999999, false}, // an older code
		{58000001, true},
		{58000000, false},
		{58000003, true}, // skipping steps is fine
		{0, false},
		{-1, false},
	}
	for _, st := range steps {
		got, err := s.AcceptTOTPStep(ctx, "alice", st.step)
		if err != nil || got != st.want {
			t.Errorf("AcceptTOTPStep(%d) = %v, %v; want %v, nil", st.step, got, err, st.want)
		}
	}
	u, err := s.GetUser(ctx, "alice")
	must(t, "GetUser", err)
	if u.TOTPLastStep != 58000003 {
		t.Errorf("TOTPLastStep = %d; want 58000003", u.TOTPLastStep)
	}
	// Accepting a step is not an audited change: the login event records it.
	if evs := verified(t, s); len(evs) != 1 {
		t.Errorf("the log has %d events; want 1 (user.created)", len(evs))
	}
}

func testTOTPStepConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, "alice")
	const goroutines = 20
	for step := int64(100); step < 105; step++ {
		start := make(chan struct{})
		type result struct {
			ok  bool
			err error
		}
		results := make(chan result, goroutines)
		for range goroutines {
			go func() {
				<-start
				ok, err := s.AcceptTOTPStep(ctx, "alice", step)
				results <- result{ok, err}
			}()
		}
		close(start)
		wins := 0
		for range goroutines {
			r := <-results
			if r.err != nil {
				t.Errorf("step %d: AcceptTOTPStep: %v", step, r.err)
			}
			if r.ok {
				wins++
			}
		}
		if wins != 1 {
			t.Errorf("step %d: %d of %d concurrent AcceptTOTPStep calls won; want exactly 1", step, wins, goroutines)
		}
	}
}

func testLoginFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	const max = 3
	const lockout = 15 * time.Minute
	check := func(what string, got store.LoginFailures, want store.LoginFailures) {
		t.Helper()
		checkUTC(t, what, got.LockedUntil)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
		}
		stored, err := s.LoginFailures(ctx, want.Name)
		must(t, "LoginFailures", err)
		if diff := cmp.Diff(want, stored); diff != "" {
			t.Errorf("LoginFailures after %s mismatch (-want +got):\n%s", what, diff)
		}
	}
	reserve := func(name string, now time.Time) store.LoginFailures {
		t.Helper()
		lf, err := s.ReserveLoginAttempt(ctx, name, now, max, lockout)
		must(t, "ReserveLoginAttempt", err)
		return lf
	}

	got, err := s.LoginFailures(ctx, "mallory")
	must(t, "LoginFailures of a clean name", err)
	if diff := cmp.Diff(store.LoginFailures{Name: "mallory"}, got); diff != "" {
		t.Errorf("LoginFailures of a clean name (-want +got):\n%s", diff)
	}

	// Counted whether or not the user exists.
	now := t0
	check("attempt 1", reserve("mallory", now), store.LoginFailures{Name: "mallory", Count: 1})
	check("attempt 2", reserve("mallory", now.Add(time.Second)), store.LoginFailures{Name: "mallory", Count: 2})
	lockedUntil := audit.Normalize(now.Add(2*time.Second + lockout))
	// The attempt that reaches max is reserved (and evaluated) and locks out.
	check("attempt 3", reserve("mallory", now.Add(2*time.Second)), store.LoginFailures{Name: "mallory", Count: 3, LockedUntil: lockedUntil})

	// While locked out nothing is reserved and nothing changes.
	during := lockedUntil.Add(-time.Minute)
	lf, err := s.ReserveLoginAttempt(ctx, "mallory", during, max, lockout)
	checkErr(t, "ReserveLoginAttempt while locked out", err, store.ErrLockedOut)
	if diff := cmp.Diff(store.LoginFailures{Name: "mallory", Count: 3, LockedUntil: lockedUntil}, lf); diff != "" {
		t.Errorf("ReserveLoginAttempt while locked out returned (-want +got):\n%s", diff)
	}
	check("after a refused attempt", mustFailures(t, s, "mallory"), store.LoginFailures{Name: "mallory", Count: 3, LockedUntil: lockedUntil})

	// Once the lockout has ended, counting starts again.
	check("attempt after the lockout", reserve("mallory", lockedUntil), store.LoginFailures{Name: "mallory", Count: 1})
	check("attempt 2 after the lockout", reserve("mallory", lockedUntil.Add(time.Second)), store.LoginFailures{Name: "mallory", Count: 2})

	// Another name has its own counter.
	check("attempt of another name", reserve("trudy", now), store.LoginFailures{Name: "trudy", Count: 1})

	// A success releases the reservation.
	must(t, "ClearLoginFailures", s.ClearLoginFailures(ctx, "mallory"))
	check("after ClearLoginFailures", mustFailures(t, s, "mallory"), store.LoginFailures{Name: "mallory"})
	must(t, "ClearLoginFailures of a clean name", s.ClearLoginFailures(ctx, "nobody"))
	check("attempt after ClearLoginFailures", reserve("mallory", lockedUntil.Add(2*time.Second)), store.LoginFailures{Name: "mallory", Count: 1})
	if got, err := s.LoginFailures(ctx, "trudy"); err != nil || got.Count != 1 {
		t.Errorf("LoginFailures(trudy) = %+v, %v; want a count of 1", got, err)
	}
	// max <= 0 never locks out.
	for i := range 10 {
		lf, err := s.ReserveLoginAttempt(ctx, "nolimit", now, 0, lockout)
		must(t, "ReserveLoginAttempt with max 0", err)
		if lf.Count != i+1 || !lf.LockedUntil.IsZero() {
			t.Fatalf("attempt %d with max 0 = %+v; want a count of %d and no lockout", i+1, lf, i+1)
		}
	}
	if evs := verified(t, s); len(evs) != 0 {
		t.Errorf("reservations appended %d events; want none (the caller records failures)", len(evs))
	}
}

func mustFailures(t *testing.T, s store.Store, name string) store.LoginFailures {
	t.Helper()
	lf, err := s.LoginFailures(t.Context(), name)
	must(t, "LoginFailures", err)
	return lf
}

// testLoginFailuresConcurrent: however many attempts run at once, at most
// max are reserved before the lockout; the rest are refused.
func testLoginFailuresConcurrent(t *testing.T, s store.Store) {
	const max, goroutines = 5, 64
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		reserved, refused int
	)
	start := make(chan struct{})
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.ReserveLoginAttempt(context.Background(), "alice", t0, max, time.Hour)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				reserved++
			case errors.Is(err, store.ErrLockedOut):
				refused++
			default:
				t.Errorf("ReserveLoginAttempt: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if reserved != max || refused != goroutines-max {
		t.Errorf("%d concurrent attempts: %d reserved, %d refused; want %d and %d", goroutines, reserved, refused, max, goroutines-max)
	}
}

func testCertificates(t *testing.T, s store.Store) {
	ctx := t.Context()
	sshCert := store.IssuedCert{
		Serial:      "0a1b2c3d4e5f",
		Kind:        store.CertSSHUser,
		Subject:     "alice",
		SubjectKind: identity.User,
		NotBefore:   t0.Add(-time.Minute),
		NotAfter:    t0.Add(8 * time.Hour),
		IssuedAt:    t0,
		Principals:  []string{"ubuntu", "alice", "root"},
	}
	x509Cert := store.IssuedCert{ // the same serial in another kind is another certificate
		Serial:      "0a1b2c3d4e5f",
		Kind:        store.CertX509,
		Subject:     "alice",
		SubjectKind: identity.User,
		NotBefore:   t0.Add(-time.Minute),
		NotAfter:    t0.Add(8 * time.Hour),
		IssuedAt:    t0,
		Principals:  []string{"spiffe://prod/user/alice"},
	}
	hostCert := store.IssuedCert{
		Serial:      "ff",
		Kind:        store.CertSSHHost,
		Subject:     "web-1",
		SubjectKind: identity.Agent,
		NotBefore:   t0,
		NotAfter:    t0.Add(24 * time.Hour),
		IssuedAt:    t0,
		RevokedAt:   t0.Add(time.Hour),
	}
	certEv := func(c store.IssuedCert) audit.Event {
		e := ev(audit.CertIssued, c.Serial)
		e.Details = map[string]string{"kind": string(c.Kind), "principals": strings.Join(c.Principals, ",")}
		return e
	}
	must(t, "RecordCertificates", s.RecordCertificates(ctx,
		[]store.IssuedCert{sshCert, x509Cert}, []audit.Event{certEv(sshCert), certEv(x509Cert)}))
	must(t, "RecordCertificates host", s.RecordCertificates(ctx, []store.IssuedCert{hostCert}, []audit.Event{certEv(hostCert)}))

	for _, want := range []store.IssuedCert{sshCert, x509Cert, hostCert} {
		got, err := s.GetCertificate(ctx, want.Kind, want.Serial)
		must(t, "GetCertificate", err)
		checkUTC(t, "IssuedCert times", got.NotBefore, got.NotAfter, got.IssuedAt, got.RevokedAt)
		want.NotBefore, want.NotAfter = audit.Normalize(want.NotBefore), audit.Normalize(want.NotAfter)
		want.IssuedAt = audit.Normalize(want.IssuedAt)
		if !want.RevokedAt.IsZero() {
			want.RevokedAt = audit.Normalize(want.RevokedAt)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("GetCertificate(%s, %s) mismatch (-want +got):\n%s", want.Kind, want.Serial, diff)
		}
	}
	_, err := s.GetCertificate(ctx, store.CertSSHHost, sshCert.Serial)
	checkErr(t, "GetCertificate of a serial recorded for another kind", err, store.ErrNotFound)

	// A batch with one duplicate records nothing.
	fresh := sshCert
	fresh.Serial = "beef"
	err = s.RecordCertificates(ctx, []store.IssuedCert{fresh, sshCert}, []audit.Event{certEv(fresh), certEv(sshCert)})
	checkErr(t, "RecordCertificates with a recorded serial", err, store.ErrExists)
	_, err = s.GetCertificate(ctx, fresh.Kind, fresh.Serial)
	checkErr(t, "GetCertificate of a certificate from a failed batch", err, store.ErrNotFound)

	evs := verified(t, s)
	if len(evs) != 3 {
		t.Fatalf("the log has %d events; want 3", len(evs))
	}
	if diff := cmp.Diff(certEv(x509Cert).Details, evs[1].Details); diff != "" {
		t.Errorf("event details (-want +got):\n%s", diff)
	}
}

func testAuditAppend(t *testing.T, s store.Store) {
	ctx := t.Context()
	if head, err := s.AuditHead(ctx); err != nil || head != "" {
		t.Errorf("AuditHead of an empty log = %q, %v; want \"\", nil", head, err)
	}
	if evs, err := s.ListAudit(ctx, store.AuditFilter{}); err != nil || len(evs) != 0 {
		t.Errorf("ListAudit of an empty log = %v, %v; want none", evs, err)
	}

	in := audit.Event{
		Time:     t0,
		Type:     audit.AdminDenied,
		Actor:    "bob",
		Subject:  "users/alice",
		Outcome:  audit.Failure,
		Reason:   "not an admin",
		SourceIP: "2001:db8::1",
		Details:  map[string]string{"method": "DELETE", "path": "/v1/users/alice", "empty": ""},
	}
	first, err := s.AppendAudit(ctx, in)
	must(t, "AppendAudit", err)
	want := audit.Chain(nil, in)
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("AppendAudit returned (-want +got):\n%s", diff)
	}
	checkUTC(t, "AppendAudit", first.Time)

	second, err := s.AppendAudit(ctx, audit.Event{Time: t0.Add(time.Second), Type: audit.LoginSuccess, Actor: "alice", Outcome: audit.Success})
	must(t, "AppendAudit", err)
	if second.Seq != 2 || second.PrevHash != first.Hash {
		t.Errorf("second event: Seq %d, PrevHash %q; want 2, %q", second.Seq, second.PrevHash, first.Hash)
	}

	evs := verified(t, s)
	if diff := cmp.Diff([]audit.Event{first, second}, evs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ListAudit mismatch (-want +got):\n%s", diff)
	}
}

func testAuditChain(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "Initialize", s.Initialize(ctx, map[string]string{"cluster": "prod"},
		[]store.CAKey{{Kind: "x509", Public: []byte("pub"), SealedPrivate: []byte("priv"), CreatedAt: t0, Active: true}},
		ev(audit.ClusterInit, "prod")))
	mustCreateRole(t, s, "ops", "root")
	mustCreateUser(t, s, "alice", "ops")
	must(t, "SetUserLocked", s.SetUserLocked(ctx, "alice", true, ev(audit.UserLocked, "alice")))
	must(t, "SetUserLocked", s.SetUserLocked(ctx, "alice", false, ev(audit.UserUnlocked, "alice")))
	must(t, "ResetMFA", s.ResetMFA(ctx, "alice", []byte("s"), ev(audit.UserMFAReset, "alice")))
	must(t, "SetPasswordHash", s.SetPasswordHash(ctx, "alice", "h", ev(audit.PasswordRehashed, "alice")))
	_, err := s.ReserveLoginAttempt(ctx, "alice", t0, 5, time.Minute)
	must(t, "ReserveLoginAttempt", err)
	cert := store.IssuedCert{Serial: "01", Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User, NotBefore: t0, NotAfter: t0, IssuedAt: t0}
	x509 := cert
	x509.Kind = store.CertX509
	must(t, "RecordCertificates", s.RecordCertificates(ctx, []store.IssuedCert{cert, x509},
		[]audit.Event{ev(audit.CertIssued, "ssh-user/01"), ev(audit.CertIssued, "x509/01")}))
	_, err = s.AppendAudit(ctx, ev(audit.LoginSuccess, "alice"))
	must(t, "AppendAudit", err)
	must(t, "DeleteUser", s.DeleteUser(ctx, "alice", ev(audit.UserDeleted, "alice")))
	must(t, "DeleteRole", s.DeleteRole(ctx, "ops", ev(audit.RoleDeleted, "ops")))

	evs := verified(t, s)
	wantTypes := []audit.Type{audit.ClusterInit, audit.RoleCreated, audit.UserCreated, audit.UserLocked,
		audit.UserUnlocked, audit.UserMFAReset, audit.PasswordRehashed,
		audit.CertIssued, audit.CertIssued, audit.LoginSuccess, audit.UserDeleted, audit.RoleDeleted}
	if diff := cmp.Diff(wantTypes, types(evs)); diff != "" {
		t.Errorf("audit event types (-want +got):\n%s", diff)
	}
	// The events are the callers' own, with only the chain filled in.
	if got := evs[8]; got.Subject != "x509/01" || got.Actor != "admin" || got.SourceIP != "192.0.2.1" {
		t.Errorf("event 10 = %+v; want the caller's x509/01 event", got)
	}
}

func testAuditFilter(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 7
	for i := range n {
		_, err := s.AppendAudit(ctx, evAt(audit.LoginSuccess, "alice", t0.Add(time.Duration(i)*time.Second)))
		must(t, "AppendAudit", err)
	}
	all := verified(t, s)
	if len(all) != n {
		t.Fatalf("ListAudit returned %d events; want %d", len(all), n)
	}
	tests := []struct {
		f        store.AuditFilter
		from, to int64 // seqs, inclusive; from > to for none
	}{
		{store.AuditFilter{}, 1, n},
		{store.AuditFilter{AfterSeq: 3}, 4, n},
		{store.AuditFilter{Limit: 2}, 1, 2},
		{store.AuditFilter{AfterSeq: 3, Limit: 2}, 4, 5},
		{store.AuditFilter{AfterSeq: 5, Limit: 10}, 6, n},
		{store.AuditFilter{AfterSeq: n}, 1, 0},
		{store.AuditFilter{AfterSeq: n + 5}, 1, 0},
	}
	for _, tt := range tests {
		got, err := s.ListAudit(ctx, tt.f)
		must(t, "ListAudit", err)
		var want []audit.Event
		if tt.from <= tt.to {
			want = all[tt.from-1 : tt.to]
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("ListAudit(%+v) mismatch (-want +got):\n%s", tt.f, diff)
		}
	}
}

func testAuditConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const goroutines = 20
	errs := make(chan error, goroutines)
	start := make(chan struct{})
	for i := range goroutines {
		go func() {
			<-start
			_, err := s.AppendAudit(ctx, evAt(audit.LoginSuccess, "alice", t0.Add(time.Duration(i)*time.Millisecond)))
			errs <- err
		}()
	}
	close(start)
	for range goroutines {
		if err := <-errs; err != nil {
			t.Errorf("concurrent AppendAudit: %v", err)
		}
	}
	if evs := verified(t, s); len(evs) != goroutines {
		t.Errorf("the log has %d events; want %d", len(evs), goroutines)
	}
}

func testFailedCallsChangeNothing(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "Initialize", s.Initialize(ctx, map[string]string{"cluster": "prod"}, nil, ev(audit.ClusterInit, "prod")))
	mustCreateRole(t, s, "ops", "root")
	alice := stored(mustCreateUser(t, s, "alice", "ops"))
	cert := store.IssuedCert{Serial: "01", Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User, NotBefore: t0, NotAfter: t0, IssuedAt: t0}
	must(t, "RecordCertificates", s.RecordCertificates(ctx, []store.IssuedCert{cert}, []audit.Event{ev(audit.CertIssued, "01")}))
	used := joinToken("used", "web-1", t0, time.Hour)
	mustCreateToken(t, s, used)
	enrol(t, s, used, t0)
	web1 := store.Agent{Name: "web-1", CreatedAt: t0, EnrolledAt: t0}
	locked := joinToken("locked", "db-1", t0, time.Hour)
	mustCreateToken(t, s, locked)
	enrol(t, s, locked, t0)
	must(t, "SetAgentLocked", s.SetAgentLocked(ctx, "db-1", true, ev(audit.AgentLocked, "db-1")))
	db1 := store.Agent{Name: "db-1", Locked: true, CreatedAt: t0, EnrolledAt: t0}
	lockedAgain := joinToken("locked-again", "db-1", t0, time.Hour)
	mustCreateToken(t, s, lockedAgain)
	expired := joinToken("expired", "web-2", t0, time.Minute)
	mustCreateToken(t, s, expired)
	rule, err := s.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "web-1", To: "db-1/postgres", CreatedBy: "admin", CreatedAt: t0},
		ev(audit.PolicyAdded, "db-1/postgres"))
	must(t, "AddPolicyRule", err)
	later := t0.Add(30 * time.Minute)

	before := verified(t, s)
	headBefore, err := s.AuditHead(ctx)
	must(t, "AuditHead", err)

	fresh := cert
	fresh.Serial = "02"
	calls := []struct {
		name string
		want error
		call func() error
	}{
		{"Initialize again", store.ErrExists, func() error {
			return s.Initialize(ctx, map[string]string{"cluster": "x"}, nil, ev(audit.ClusterInit, "x"))
		}},
		{"CreateUser duplicate", store.ErrExists, func() error {
			return s.CreateUser(ctx, store.User{Name: "alice", PasswordHash: "new", CreatedAt: t0}, ev(audit.UserCreated, "alice"))
		}},
		{"CreateUser unknown role", store.ErrNotFound, func() error {
			return s.CreateUser(ctx, store.User{Name: "bob", Roles: []string{"ops", "ghost"}, CreatedAt: t0}, ev(audit.UserCreated, "bob"))
		}},
		{"CreateRole duplicate", store.ErrExists, func() error {
			return s.CreateRole(ctx, store.Role{Name: "ops", Admin: true, CreatedAt: t0}, ev(audit.RoleCreated, "ops"))
		}},
		{"DeleteRole held", store.ErrExists, func() error { return s.DeleteRole(ctx, "ops", ev(audit.RoleDeleted, "ops")) }},
		{"DeleteRole unknown", store.ErrNotFound, func() error { return s.DeleteRole(ctx, "ghost", ev(audit.RoleDeleted, "ghost")) }},
		{"DeleteUser unknown", store.ErrNotFound, func() error { return s.DeleteUser(ctx, "ghost", ev(audit.UserDeleted, "ghost")) }},
		{"SetUserLocked unknown", store.ErrNotFound, func() error {
			return s.SetUserLocked(ctx, "ghost", true, ev(audit.UserLocked, "ghost"))
		}},
		{"ResetMFA unknown", store.ErrNotFound, func() error { return s.ResetMFA(ctx, "ghost", nil, ev(audit.UserMFAReset, "ghost")) }},
		{"SetPasswordHash unknown", store.ErrNotFound, func() error {
			return s.SetPasswordHash(ctx, "ghost", "h", ev(audit.PasswordRehashed, "ghost"))
		}},
		{"RecordCertificates duplicate", store.ErrExists, func() error {
			return s.RecordCertificates(ctx, []store.IssuedCert{fresh, cert}, []audit.Event{ev(audit.CertIssued, "02"), ev(audit.CertIssued, "01")})
		}},
		{"CreateJoinToken duplicate", store.ErrExists, func() error {
			return s.CreateJoinToken(ctx, joinToken("used", "web-9", t0, time.Hour), ev(audit.TokenCreated, "web-9"))
		}},
		{"ConsumeJoinToken unknown", store.ErrNotFound, func() error {
			_, err := s.ConsumeJoinToken(ctx, tokenHash("ghost"), t0, ev(audit.AgentEnrolled, "ghost"))
			return err
		}},
		{"ConsumeJoinToken used", store.ErrTokenUsed, func() error {
			_, err := s.ConsumeJoinToken(ctx, used.Hash, later, ev(audit.AgentEnrolled, "web-1"))
			return err
		}},
		{"ConsumeJoinToken expired", store.ErrTokenExpired, func() error {
			_, err := s.ConsumeJoinToken(ctx, expired.Hash, later, ev(audit.AgentEnrolled, "web-2"))
			return err
		}},
		{"ConsumeJoinToken locked agent", store.ErrLocked, func() error {
			_, err := s.ConsumeJoinToken(ctx, lockedAgain.Hash, later, ev(audit.AgentEnrolled, "db-1"))
			return err
		}},
		{"SetAgentLocked unknown", store.ErrNotFound, func() error {
			return s.SetAgentLocked(ctx, "ghost", true, ev(audit.AgentLocked, "ghost"))
		}},
		{"AddPolicyRule duplicate", store.ErrExists, func() error {
			r := rule
			r.CreatedBy = "other"
			_, err := s.AddPolicyRule(ctx, r, ev(audit.PolicyAdded, r.To))
			return err
		}},
		{"DeletePolicyRule unknown", store.ErrNotFound, func() error {
			return s.DeletePolicyRule(ctx, rule.ID+1, ev(audit.PolicyRemoved, "x"))
		}},
	}
	for _, c := range calls {
		checkErr(t, c.name, c.call(), c.want)
	}

	if diff := cmp.Diff(before, verified(t, s), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("failed calls changed the log (-before +after):\n%s", diff)
	}
	if head, _ := s.AuditHead(ctx); head != headBefore {
		t.Errorf("failed calls moved AuditHead from %q to %q", headBefore, head)
	}
	users, err := s.ListUsers(ctx)
	must(t, "ListUsers", err)
	if diff := cmp.Diff([]store.User{alice}, users, userOpts); diff != "" {
		t.Errorf("failed calls changed the users (-want +got):\n%s", diff)
	}
	if r, err := s.GetRole(ctx, "ops"); err != nil || r.Admin {
		t.Errorf("GetRole(ops) = %+v, %v; want the role unchanged", r, err)
	}
	if _, err := s.GetCertificate(ctx, fresh.Kind, fresh.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCertificate of a certificate from a failed batch: %v; want ErrNotFound", err)
	}
	if v, _ := s.GetMeta(ctx, "cluster"); v != "prod" {
		t.Errorf("GetMeta(cluster) = %q; want prod", v)
	}
	_, err = s.AddPolicyRule(ctx, store.PolicyRule{Effect: "maybe", From: "*", To: "*/*", CreatedAt: t0}, ev(audit.PolicyAdded, "*/*"))
	if err == nil {
		t.Errorf("AddPolicyRule with effect \"maybe\" succeeded")
	}
	agents, err := s.ListAgents(ctx)
	must(t, "ListAgents", err)
	if diff := cmp.Diff([]store.Agent{normalAgent(db1), normalAgent(web1)}, agents); diff != "" {
		t.Errorf("failed calls changed the agents (-want +got):\n%s", diff)
	}
	rules, err := s.ListPolicyRules(ctx)
	must(t, "ListPolicyRules", err)
	if diff := cmp.Diff([]store.PolicyRule{rule}, rules); diff != "" {
		t.Errorf("failed calls changed the policy rules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, verified(t, s), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("a refused AddPolicyRule changed the log (-before +after):\n%s", diff)
	}
	// The refused tokens were left unused.
	must(t, "SetAgentLocked false", s.SetAgentLocked(ctx, "db-1", false, ev(audit.AgentUnlocked, "db-1")))
	enrol(t, s, lockedAgain, later)
}

func testCloseTwice(t *testing.T, s store.Store) {
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// A closed store fails calls instead of hanging or panicking.
	if _, err := s.ListUsers(context.Background()); err == nil {
		t.Errorf("ListUsers after Close succeeded; want an error")
	}
}

func testUpdateRole(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := mustCreateRole(t, s, "ops", "ubuntu")
	upd := store.Role{Name: "ops", Logins: []string{"root", "ubuntu"}, MaxTTL: time.Hour, Admin: true,
		Nodes: []string{"web-*"}, Services: []string{"db-1/postgres"}, PortForwarding: true, AgentForwarding: true,
		CreatedAt: t0.Add(time.Hour)} // CreatedAt is not updated
	must(t, "UpdateRole", s.UpdateRole(ctx, upd, ev(audit.Type("role.updated"), "ops")))
	got, err := s.GetRole(ctx, "ops")
	must(t, "GetRole", err)
	want := upd
	want.CreatedAt = audit.Normalize(orig.CreatedAt)
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("role after UpdateRole (-want +got):\n%s", diff)
	}
	n := len(verified(t, s))
	err = s.UpdateRole(ctx, store.Role{Name: "nobody"}, ev(audit.Type("role.updated"), "nobody"))
	checkErr(t, "UpdateRole of an unknown role", err, store.ErrNotFound)
	if got := len(verified(t, s)); got != n {
		t.Errorf("a failed UpdateRole appended %d events; want 0", got-n)
	}
}

func testSetUserRoles(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreateRole(t, s, "ops", "ubuntu")
	mustCreateRole(t, s, "dba", "postgres")
	mustCreateUser(t, s, "alice", "ops")
	must(t, "SetUserRoles", s.SetUserRoles(ctx, "alice", []string{"dba", "ops", "dba"}, ev(audit.Type("user.roles"), "alice")))
	u, err := s.GetUser(ctx, "alice")
	must(t, "GetUser", err)
	if diff := cmp.Diff([]string{"dba", "ops"}, slices.Sorted(slices.Values(u.Roles))); diff != "" {
		t.Errorf("roles after SetUserRoles (-want +got):\n%s", diff)
	}
	n := len(verified(t, s))
	err = s.SetUserRoles(ctx, "alice", []string{"ops", "nosuch"}, ev(audit.Type("user.roles"), "alice"))
	checkErr(t, "SetUserRoles with an unknown role", err, store.ErrNotFound)
	if err != nil && !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("SetUserRoles with an unknown role: %v; want the role named", err)
	}
	err = s.SetUserRoles(ctx, "bob", []string{"ops"}, ev(audit.Type("user.roles"), "bob"))
	checkErr(t, "SetUserRoles of an unknown user", err, store.ErrNotFound)
	if got := len(verified(t, s)); got != n {
		t.Errorf("failed SetUserRoles appended %d events; want 0", got-n)
	}
	u, err = s.GetUser(ctx, "alice")
	must(t, "GetUser", err)
	if diff := cmp.Diff([]string{"dba", "ops"}, slices.Sorted(slices.Values(u.Roles))); diff != "" {
		t.Errorf("roles after a failed SetUserRoles (-want +got):\n%s", diff)
	}
	must(t, "SetUserRoles to none", s.SetUserRoles(ctx, "alice", nil, ev(audit.Type("user.roles"), "alice")))
	if u, err := s.GetUser(ctx, "alice"); err != nil || len(u.Roles) != 0 {
		t.Errorf("GetUser after SetUserRoles(nil) = %+v, %v; want no roles", u.Roles, err)
	}
	// A role that no one holds any more can be deleted.
	must(t, "DeleteRole", s.DeleteRole(ctx, "dba", ev(audit.RoleDeleted, "dba")))
}
