package sqlitestore

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

func hashOf(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

var tNow = time.Date(2026, 11, 24, 6, 50, 41, 0, time.UTC)

func TestConsumeJoinTokenMessages(t *testing.T) {
	ctx := t.Context()
	s, _ := openTemp(t)
	mk := func(token string, expires time.Time) store.JoinToken {
		tok := store.JoinToken{Hash: hashOf(token), Agent: "web-1", CreatedBy: "admin", CreatedAt: tNow.Add(-time.Hour), ExpiresAt: expires}
		if err := s.CreateJoinToken(ctx, tok, audit.Event{Time: tNow, Type: audit.TokenCreated}); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	used := mk("used", tNow.Add(time.Hour))
	if _, err := s.ConsumeJoinToken(ctx, used.Hash, tNow, audit.Event{Time: tNow, Type: audit.AgentEnrolled}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		hash string
		now  time.Time
		want string
		is   error
	}{
		{"used", used.Hash, tNow.Add(time.Minute),
			"join token already used on 2026-11-24 06:50 UTC: create a new one with tunnel admin tokens create --agent web-1", store.ErrTokenUsed},
		{"expired", mk("expired", tNow).Hash, tNow.Add(3*time.Minute + 59*time.Second),
			"join token expired 3m ago: create a new one with tunnel admin tokens create --agent web-1", store.ErrTokenExpired},
		{"unknown", hashOf("nope"), tNow, "unknown join token: check you copied it whole", store.ErrNotFound},
	}
	for _, tt := range tests {
		_, err := s.ConsumeJoinToken(ctx, tt.hash, tt.now, audit.Event{Time: tt.now, Type: audit.AgentEnrolled})
		if err == nil || err.Error() != tt.want || !errors.Is(err, tt.is) {
			t.Errorf("%s: ConsumeJoinToken = %v; want %q wrapping %q", tt.name, err, tt.want, tt.is)
		}
	}

	if err := s.SetAgentLocked(ctx, "web-1", true, audit.Event{Time: tNow, Type: audit.AgentLocked}); err != nil {
		t.Fatal(err)
	}
	_, err := s.ConsumeJoinToken(ctx, mk("locked", tNow.Add(time.Hour)).Hash, tNow, audit.Event{Time: tNow, Type: audit.AgentEnrolled})
	want := "agent web-1 is locked by an administrator: it cannot enrol until it is unlocked"
	if err == nil || err.Error() != want || !errors.Is(err, store.ErrLocked) {
		t.Errorf("locked: ConsumeJoinToken = %v; want %q wrapping ErrLocked", err, want)
	}
}

func TestCreateJoinTokenRefusesBadInput(t *testing.T) {
	ctx := t.Context()
	s, _ := openTemp(t)
	good := store.JoinToken{Hash: hashOf("t"), Agent: "web-1", CreatedAt: tNow, ExpiresAt: tNow.Add(time.Hour)}
	for name, mod := range map[string]func(*store.JoinToken){
		"plaintext token": func(t *store.JoinToken) { t.Hash = "tjoin_0123456789abcdef" },
		"uppercase hex":   func(t *store.JoinToken) { t.Hash = strings.ToUpper(t.Hash) },
		"short hash":      func(t *store.JoinToken) { t.Hash = t.Hash[:63] },
		"empty agent":     func(t *store.JoinToken) { t.Agent = "" },
		"no expiry":       func(t *store.JoinToken) { t.ExpiresAt = time.Time{} },
	} {
		tok := good
		mod(&tok)
		if err := s.CreateJoinToken(ctx, tok, audit.Event{Time: tNow, Type: audit.TokenCreated}); err == nil {
			t.Errorf("CreateJoinToken with a %s succeeded", name)
		}
	}
	if err := verify(t, s); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM join_tokens`).Scan(&n); err != nil || n != 0 {
		t.Errorf("join_tokens has %d rows, %v; want none", n, err)
	}
	if head, _ := s.AuditHead(ctx); head != "" {
		t.Errorf("refused CreateJoinToken calls appended events")
	}
	if err := s.CreateJoinToken(ctx, good, audit.Event{Time: tNow, Type: audit.TokenCreated}); err != nil {
		t.Errorf("CreateJoinToken: %v", err)
	}
}

func TestAddPolicyRuleRefusesBadInput(t *testing.T) {
	ctx := t.Context()
	s, _ := openTemp(t)
	for _, r := range []store.PolicyRule{
		{Effect: "", From: "*", To: "*/*"},
		{Effect: "ALLOW", From: "*", To: "*/*"},
		{Effect: store.Allow, From: "", To: "*/*"},
		{Effect: store.Allow, From: "a/b", To: "*/*"},
		{Effect: store.Allow, From: "*", To: ""},
		{Effect: store.Allow, From: "*", To: "db-1"},
		{Effect: store.Allow, From: "*", To: "/postgres"},
		{Effect: store.Allow, From: "*", To: "db-1/"},
		{Effect: store.Allow, From: "*", To: "a/b/c"},
	} {
		r.CreatedAt = tNow
		if _, err := s.AddPolicyRule(ctx, r, audit.Event{Time: tNow, Type: audit.PolicyAdded}); err == nil || errors.Is(err, store.ErrExists) {
			t.Errorf("AddPolicyRule(%+v) = %v; want a plain error", r, err)
		}
	}
	if head, _ := s.AuditHead(ctx); head != "" {
		t.Errorf("refused AddPolicyRule calls appended events")
	}
	// The schema refuses another effect too.
	_, err := s.db.ExecContext(ctx, `INSERT INTO policy_rules (effect, from_agent, to_target, created_by, created_at)
		VALUES ('permit', '*', '*/*', 'x', 0)`)
	if err == nil {
		t.Errorf("the schema accepted effect 'permit'")
	}
}

// TestAuditFailureRollsBackNewMethods makes the audit insert fail and
// checks that the changes it was to record are not made either.
func TestAuditFailureRollsBackNewMethods(t *testing.T) {
	ctx := t.Context()
	s, _ := openTemp(t)
	tok := store.JoinToken{Hash: hashOf("t"), Agent: "web-1", CreatedAt: tNow, ExpiresAt: tNow.Add(time.Hour)}
	if err := s.CreateJoinToken(ctx, tok, audit.Event{Time: tNow, Type: audit.TokenCreated}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER audit_full BEFORE INSERT ON audit_events
		BEGIN SELECT RAISE(ABORT, 'audit log full'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeJoinToken(ctx, tok.Hash, tNow, audit.Event{Time: tNow, Type: audit.AgentEnrolled}); err == nil ||
		!strings.Contains(err.Error(), "audit log full") {
		t.Errorf("ConsumeJoinToken with a failing audit log = %v; want the audit error", err)
	}
	if _, err := s.GetAgent(ctx, "web-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent after a failed enrolment: %v; want ErrNotFound", err)
	}
	var used sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT used_at FROM join_tokens WHERE hash = ?`, tok.Hash).Scan(&used); err != nil || used.Valid {
		t.Errorf("used_at after a failed enrolment = %v, %v; want NULL", used, err)
	}
	if _, err := s.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Deny, From: "*", To: "*/*", CreatedAt: tNow},
		audit.Event{Time: tNow, Type: audit.PolicyAdded}); err == nil {
		t.Errorf("AddPolicyRule with a failing audit log succeeded")
	}
	if rules, err := s.ListPolicyRules(ctx); err != nil || len(rules) != 0 {
		t.Errorf("ListPolicyRules after a failed AddPolicyRule = %v, %v; want none", rules, err)
	}
	if _, err := s.AppendAudits(ctx, []audit.Event{{Time: tNow, Type: audit.StreamAllowed}}); err == nil {
		t.Errorf("AppendAudits with a failing audit log succeeded")
	}
	if _, err := s.db.ExecContext(ctx, `DROP TRIGGER audit_full`); err != nil {
		t.Fatal(err)
	}

	// A batch whose last event fails leaves none of the batch behind.
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER audit_no_denied BEFORE INSERT ON audit_events
		WHEN NEW.type = 'stream.denied' BEGIN SELECT RAISE(ABORT, 'no'); END`); err != nil {
		t.Fatal(err)
	}
	_, err := s.AppendAudits(ctx, []audit.Event{
		{Time: tNow, Type: audit.StreamAllowed}, {Time: tNow, Type: audit.StreamAllowed}, {Time: tNow, Type: audit.StreamDenied},
	})
	if err == nil {
		t.Fatalf("AppendAudits with a failing event succeeded")
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]audit.Type{audit.TokenCreated}, eventTypes(evs)); diff != "" {
		t.Errorf("a failed AppendAudits left events behind (-want +got):\n%s", diff)
	}
	if err := verify(t, s); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func eventTypes(evs []audit.Event) []audit.Type {
	var ts []audit.Type
	for _, e := range evs {
		ts = append(ts, e.Type)
	}
	return ts
}
