package sessions_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is a session manager on a real store and CA. bob and alice hold ops
// (login ubuntu on web-*, sessions up to 4 h); web-1, web-2 and db-1 are
// enrolled agents; db-1 is also a user (a user and an agent may share a
// name).
type env struct {
	t      *testing.T
	store  *sqlitestore.Store
	ca     *certs.Authority
	m      *sessions.Manager
	killed *recorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := certs.Generate(certs.Config{Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, ca: ca, killed: &recorder{}}
	now := time.Now()
	must(t, st.CreateRole(ctx, store.Role{Name: "ops", Logins: []string{"ubuntu"}, Nodes: []string{"web-*"}, MaxTTL: 4 * time.Hour, CreatedAt: now}, event(audit.RoleCreated, "ops")))
	for _, u := range []string{"bob", "alice", "db-1"} {
		must(t, st.CreateUser(ctx, store.User{Name: u, PasswordHash: "x", Roles: []string{"ops"}, CreatedAt: now}, event(audit.UserCreated, u)))
	}
	for _, a := range []string{"web-1", "web-2", "db-1"} {
		h := sha256.Sum256([]byte("token-" + a))
		tok := store.JoinToken{Hash: hex.EncodeToString(h[:]), Agent: a, CreatedBy: "admin", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		must(t, st.CreateJoinToken(ctx, tok, event(audit.TokenCreated, a)))
		_, err := st.ConsumeJoinToken(ctx, tok.Hash, now, event(audit.AgentEnrolled, a))
		must(t, err)
	}
	e.m = &sessions.Manager{Store: st, CA: ca, Killer: e.killed}
	must(t, e.m.Start(ctx))
	t.Cleanup(e.m.Close)
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func event(typ audit.Type, subject string) audit.Event {
	return audit.Event{Time: time.Now(), Type: typ, Actor: "admin", Subject: subject, Outcome: audit.Success}
}

func (e *env) user(name string) store.User {
	e.t.Helper()
	u, err := e.store.GetUser(context.Background(), name)
	must(e.t, err)
	return u
}

func sshKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	k, err := ssh.NewPublicKey(pub)
	must(t, err)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// create grants user a session on node, the login ending at loginNotAfter.
func (e *env) create(user, node string, ttl time.Duration, loginNotAfter time.Time) (*api.SessionGrant, error) {
	e.t.Helper()
	req := api.CreateSessionRequest{Node: node, Login: "ubuntu", TTL: api.Duration(ttl), SSHPublicKey: sshKey(e.t)}
	return e.m.CreateUntil(context.Background(), e.user(user), req, "192.0.2.1", loginNotAfter)
}

func (e *env) cert(kind store.CertKind, serial string) store.IssuedCert {
	e.t.Helper()
	c, err := e.store.GetCertificate(context.Background(), kind, serial)
	must(e.t, err)
	return c
}

// record records a certificate of subject (of kind sk) and returns its
// serial.
func (e *env) record(kind store.CertKind, subject string, sk identity.Kind) string {
	e.t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	serial := hex.EncodeToString(b)
	now := time.Now()
	must(e.t, e.store.RecordCertificates(context.Background(), []store.IssuedCert{{Serial: serial, Kind: kind, Subject: subject, SubjectKind: sk,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), IssuedAt: now}}, []audit.Event{event(audit.CertIssued, serial)}))
	return serial
}

type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recorder) EndSession(s store.Session, reason string) {
	r.add("session " + s.ID + ": " + reason)
}
func (r *recorder) EndUser(name, reason string)  { r.add("user " + name + ": " + reason) }
func (r *recorder) EndAgent(name, reason string) { r.add("agent " + name + ": " + reason) }

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCheckOwnUserOwnNode: the relay carries a session's stream only for
// its own user to its own node.
func TestCheckOwnUserOwnNode(t *testing.T) {
	e := newEnv(t)
	g, err := e.create("bob", "web-1", 0, time.Time{})
	must(t, err)
	id := g.Session.ID
	ctx := context.Background()
	if _, err := e.m.Check(ctx, "bob", "web-1", id); err != nil {
		t.Fatalf("bob's own session on web-1: %v", err)
	}
	for _, tc := range []struct{ user, node string }{{"alice", "web-1"}, {"bob", "web-2"}, {"alice", "web-2"}} {
		_, err := e.m.Check(ctx, tc.user, tc.node, id)
		if err == nil || err.Error() != "this session belongs to another user or node" {
			t.Errorf("%s using bob's web-1 session on %s: %v; want it refused as another user's or node's", tc.user, tc.node, err)
		}
	}
	if _, err := e.m.Check(ctx, "bob", "web-1", "nosuchsession"); err == nil || !strings.Contains(err.Error(), "unknown session") {
		t.Errorf("an unknown session: %v", err)
	}
	if _, err := e.m.Revoke(ctx, id, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Check(ctx, "bob", "web-1", id); err == nil || !strings.Contains(err.Error(), "this session has ended") {
		t.Errorf("a revoked session: %v; want it refused as ended", err)
	}
}

// TestCreateCappedByLogin: a session never outlives the login certificate
// it was granted from.
func TestCreateCappedByLogin(t *testing.T) {
	e := newEnv(t)
	loginEnds := time.Now().Add(10 * time.Minute).Truncate(time.Second)

	g, err := e.create("bob", "web-1", 0, loginEnds)
	must(t, err)
	if g.Session.Deadline.After(loginEnds) {
		t.Errorf("default session ends %s, after the login's %s", g.Session.Deadline, loginEnds)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.SSHCertificate))
	must(t, err)
	if vb := time.Unix(int64(pk.(*ssh.Certificate).ValidBefore), 0); vb.After(loginEnds) {
		t.Errorf("the session certificate is valid until %s, after the login's %s", vb, loginEnds)
	}
	rec := e.cert(store.CertSSHUser, certs.SSHSerialHex(pk.(*ssh.Certificate)))
	if rec.SubjectKind != identity.User || rec.Subject != "bob" {
		t.Errorf("session certificate recorded for %s %q; want user bob", rec.SubjectKind, rec.Subject)
	}

	_, err = e.create("bob", "web-1", 4*time.Hour, loginEnds)
	if err == nil || !strings.Contains(err.Error(), "would outlive your login") {
		t.Errorf("a 4 h session from a login ending in 10 min: %v; want it refused", err)
	}
	if g, err := e.create("bob", "web-1", 5*time.Minute, loginEnds); err != nil || g.Session.Deadline.After(loginEnds) {
		t.Errorf("a 5 min session from a login ending in 10 min: %v", err)
	}
	_, err = e.create("bob", "web-1", 0, time.Now().Add(-time.Second))
	if err == nil || !strings.Contains(err.Error(), "your login has expired") {
		t.Errorf("a session from an expired login: %v", err)
	}
}

// TestOpenForJumpCappedByLogin: a jump session ends with the login
// certificate of the jump connection.
func TestOpenForJumpCappedByLogin(t *testing.T) {
	e := newEnv(t)
	certEnds := time.Now().Add(5 * time.Minute)
	s, err := e.m.OpenForJump(context.Background(), e.user("bob"), "web-1", []string{"ubuntu"}, "00ab", certEnds, "192.0.2.1")
	must(t, err)
	if s.Deadline.After(certEnds) {
		t.Errorf("jump session ends %s, after its certificate's %s", s.Deadline, certEnds)
	}
	_, err = e.m.OpenForJump(context.Background(), e.user("bob"), "web-1", []string{"ubuntu"}, "00ab", time.Now().Add(-time.Second), "192.0.2.1")
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a jump session from an expired certificate: %v", err)
	}
}

// TestRevokeRevokesSessionCertificate: sessions revoke revokes the
// session's certificate, so that it connects nowhere any more.
func TestRevokeRevokesSessionCertificate(t *testing.T) {
	e := newEnv(t)
	g, err := e.create("bob", "web-1", 0, time.Time{})
	must(t, err)
	stored, err := e.store.GetSession(context.Background(), g.Session.ID)
	must(t, err)
	serial := stored.CertSerial
	if _, err := e.m.Revoke(context.Background(), g.Session.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if c := e.cert(store.CertSSHUser, serial); c.RevokedAt.IsZero() {
		t.Error("the session's certificate is not revoked after sessions revoke")
	}
	if got := e.killed.got(); !contains(got, "session "+g.Session.ID+": "+sessions.ReasonRevoked) {
		t.Errorf("killer calls %q; want the session ended", got)
	}

	// A jump session: its login certificate is revoked.
	login := e.record(store.CertSSHUser, "bob", identity.User)
	s, err := e.m.OpenForJump(context.Background(), e.user("bob"), "web-1", []string{"ubuntu"}, login, time.Now().Add(time.Hour), "192.0.2.1")
	must(t, err)
	if _, err := e.m.Revoke(context.Background(), s.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if c := e.cert(store.CertSSHUser, login); c.RevokedAt.IsZero() {
		t.Error("the login certificate of a revoked jump session is not revoked")
	}
}

// TestRevokeUserSparesAgentOfSameName: locking the user db-1 revokes the
// user's certificates only; locking the agent db-1 revokes none (the lock
// refuses it, and unlocking brings it back), and not the user's.
func TestRevokeUserSparesAgentOfSameName(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	userX509 := e.record(store.CertX509, "db-1", identity.User)
	userSSH := e.record(store.CertSSHUser, "db-1", identity.User)
	agentX509 := e.record(store.CertX509, "db-1", identity.Agent)
	agentHost := e.record(store.CertSSHHost, "db-1", identity.Agent)

	must(t, e.m.RevokeAgent(ctx, "db-1", "admin"))
	for _, c := range []struct {
		kind   store.CertKind
		serial string
	}{{store.CertX509, userX509}, {store.CertSSHUser, userSSH}, {store.CertX509, agentX509}, {store.CertSSHHost, agentHost}} {
		if !e.cert(c.kind, c.serial).RevokedAt.IsZero() {
			t.Errorf("after agents lock db-1, %s certificate %s is revoked; want none revoked", c.kind, c.serial)
		}
	}
	if got := e.killed.got(); !contains(got, "agent db-1: "+sessions.ReasonRevoked) || contains(got, "user db-1: "+sessions.ReasonRevoked) {
		t.Errorf("killer calls %q; want the agent ended, not the user", got)
	}

	must(t, e.m.RevokeUser(ctx, "db-1", "admin"))
	if e.cert(store.CertX509, userX509).RevokedAt.IsZero() || e.cert(store.CertSSHUser, userSSH).RevokedAt.IsZero() {
		t.Error("after users lock db-1, the user's certificates are not revoked")
	}
	if !e.cert(store.CertX509, agentX509).RevokedAt.IsZero() || !e.cert(store.CertSSHHost, agentHost).RevokedAt.IsZero() {
		t.Error("users lock db-1 revoked the certificates of the agent db-1")
	}
}

// TestRevokeUserEndsSessionsAndTellsEveryKiller: the sessions end and
// every registered killer (the relay, the jump host) is told.
func TestRevokeUserEndsSessionsAndTellsEveryKiller(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g, err := e.create("bob", "web-1", 0, time.Time{})
	must(t, err)
	jump := &recorder{}
	remove := e.m.AddKiller(jump)
	must(t, e.m.RevokeUser(ctx, "bob", "admin"))
	s, err := e.store.GetSession(ctx, g.Session.ID)
	must(t, err)
	if s.State != store.SessionRevoked {
		t.Errorf("bob's session is %s after users lock; want revoked", s.State)
	}
	for name, r := range map[string]*recorder{"Killer": e.killed, "added killer": jump} {
		if got := r.got(); !contains(got, "user bob: "+sessions.ReasonRevoked) || !contains(got, "session "+g.Session.ID+": "+sessions.ReasonRevoked) {
			t.Errorf("%s was told %q; want bob and his session ended", name, got)
		}
	}
	remove()
	must(t, e.m.RevokeUser(ctx, "alice", "admin"))
	if got := jump.got(); contains(got, "user alice: "+sessions.ReasonRevoked) {
		t.Errorf("a removed killer was still told: %q", got)
	}
	var se *sessions.Error
	if _, err := e.m.Revoke(ctx, g.Session.ID, "admin"); !errors.As(err, &se) || se.Status != 409 {
		t.Errorf("revoking an ended session: %v; want a 409 refusal", err)
	}
}

// TestEndChangedTellsTheReason: a session whose access changed ends as
// revoked with the reason, every killer is told it (the node shows it to
// the user), and it no longer carries streams; ending it again tells
// nobody.
func TestEndChangedTellsTheReason(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g, err := e.create("bob", "web-1", 0, time.Time{})
	must(t, err)
	s, err := e.store.GetSession(ctx, g.Session.ID)
	must(t, err)
	const reason = "access changed by an administrator: none of your roles allows web-1 any more"
	e.m.EndChanged(ctx, s, reason)
	after, err := e.store.GetSession(ctx, s.ID)
	must(t, err)
	if after.State != store.SessionRevoked || after.EndReason != reason {
		t.Errorf("session after EndChanged: %s %q; want revoked with the reason", after.State, after.EndReason)
	}
	if want := "session " + s.ID + ": " + reason; !contains(e.killed.got(), want) {
		t.Errorf("killer calls %q; want %q", e.killed.got(), want)
	}
	if _, err := e.m.Check(ctx, "bob", "web-1", s.ID); err == nil {
		t.Error("the ended session still carries streams")
	}
	e.m.EndChanged(ctx, s, reason)
	if n := len(e.killed.got()); n != 1 {
		t.Errorf("ending it again told the killers again: %q", e.killed.got())
	}
}
