package peer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

var now = time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

const cluster = "prod"

type env struct {
	t     *testing.T
	st    *sqlitestore.Store
	ca    *certs.Authority
	other *certs.Authority
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := func() time.Time { return now }
	ca, err := certs.Generate(certs.Config{Cluster: cluster, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.Generate(certs.Config{Cluster: cluster, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, ca: ca, other: other}
	ev := audit.Event{Time: now, Type: audit.RoleCreated, Actor: "test", Outcome: audit.Success}
	if err := st.CreateRole(ctx, store.Role{Name: "dev", CreatedAt: now}, ev); err != nil {
		t.Fatal(err)
	}
	for _, u := range []store.User{
		{Name: "alice", PasswordHash: "x", Roles: []string{"dev"}, CreatedAt: now},
		{Name: "lara", PasswordHash: "x", Roles: []string{"dev"}, Locked: true, CreatedAt: now},
	} {
		if err := st.CreateUser(ctx, u, audit.Event{Time: now, Type: audit.UserCreated, Actor: "test", Outcome: audit.Success}); err != nil {
			t.Fatal(err)
		}
	}
	e.enrol("db-1", false)
	e.enrol("db-9", true)
	return e
}

// enrol records an agent, locked if asked.
func (e *env) enrol(name string, locked bool) {
	e.t.Helper()
	ctx := context.Background()
	sum := sha256.Sum256([]byte(name))
	hash := hex.EncodeToString(sum[:])
	ev := audit.Event{Time: now, Type: audit.TokenCreated, Actor: "test", Outcome: audit.Success}
	if err := e.st.CreateJoinToken(ctx, store.JoinToken{Hash: hash, Agent: name, CreatedBy: "test", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, ev); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.st.ConsumeJoinToken(ctx, hash, now, ev); err != nil {
		e.t.Fatal(err)
	}
	if locked {
		if err := e.st.SetAgentLocked(ctx, name, true, ev); err != nil {
			e.t.Fatal(err)
		}
	}
}

// cert issues a certificate of kind/name by ca, recorded under
// (recKind, recName) unless recName is "".
func (e *env) cert(ca *certs.Authority, kind identity.Kind, name string, recKind identity.Kind, recName string) []*x509.Certificate {
	e.t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	id := identity.ID{Cluster: ca.Cluster(), Kind: kind, Name: name}
	c, err := ca.IssueX509Client(certs.X509Request{ID: id, PublicKey: pub, TTL: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	if recName != "" {
		rec := store.IssuedCert{Serial: certs.X509SerialHex(c), Kind: store.CertX509, Subject: recName, SubjectKind: recKind,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: now, Principals: []string{id.String()}}
		ev := audit.Event{Time: now, Type: audit.CertIssued, Actor: recName, Subject: rec.Serial, Outcome: audit.Success}
		if err := e.st.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{ev}); err != nil {
			e.t.Fatal(err)
		}
	}
	return []*x509.Certificate{c}
}

// revoke revokes one certificate by serial, touching nothing else (the
// user stays unlocked).
func (e *env) revoke(chain []*x509.Certificate) []*x509.Certificate {
	e.t.Helper()
	ev := audit.Event{Time: now, Type: audit.CertRevoked, Actor: "test", Outcome: audit.Success}
	got, err := e.st.RevokeCertificates(context.Background(), store.RevokeFilter{Serial: certs.X509SerialHex(chain[0]), Kind: store.CertX509}, now, ev)
	if err != nil || len(got) != 1 {
		e.t.Fatalf("RevokeCertificates: %v, %d revoked; want 1", err, len(got))
	}
	return chain
}

// brokenStore fails every certificate lookup.
type brokenStore struct{ store.Store }

func (brokenStore) GetCertificate(context.Context, store.CertKind, string) (store.IssuedCert, error) {
	return store.IssuedCert{}, errors.New("disk on fire")
}

func TestVerify(t *testing.T) {
	e := newEnv(t)
	users := []identity.Kind{identity.User}
	agents := []identity.Kind{identity.Agent}
	both := []identity.Kind{identity.Agent, identity.User}
	alice := e.cert(e.ca, identity.User, "alice", identity.User, "alice")
	tests := []struct {
		name   string
		chain  []*x509.Certificate
		at     time.Time
		kinds  []identity.Kind
		st     store.Store
		want   string // the refusal's message; "" for success
		locked bool
		// certInvalid: with locked, the certificate failed a check too.
		certInvalid bool
		intern      bool
	}{
		{name: "a user", chain: alice, kinds: users},
		{name: "an agent among both kinds", chain: e.cert(e.ca, identity.Agent, "db-1", identity.Agent, "db-1"), kinds: both},
		{name: "no certificate", kinds: users, want: "you are not logged in: run tunnel login"},
		{name: "expired", chain: alice, at: now.Add(2 * time.Hour), kinds: users, want: "your certificate expired 1h0m0s ago: run tunnel login"},
		{name: "not yet valid", chain: alice, at: now.Add(-time.Hour), kinds: users, want: "your certificate is not valid yet: check this machine's clock"},
		{name: "another CA", chain: e.cert(e.other, identity.User, "alice", identity.User, "alice"), kinds: users, want: "your certificate was not issued by this cluster"},
		{name: "an agent where users only", chain: e.cert(e.ca, identity.Agent, "db-1", identity.Agent, "db-1"), kinds: users, want: "a agent certificate cannot be used here"},
		{name: "a user where agents only", chain: alice, kinds: agents, want: "a user certificate cannot be used here"},
		{name: "a user certificate never recorded", chain: e.cert(e.ca, identity.User, "alice", "", ""), kinds: users, want: "this gateway has no record of your certificate: run tunnel login"},
		{name: "an agent certificate never recorded", chain: e.cert(e.ca, identity.Agent, "db-1", "", ""), kinds: agents, want: "this gateway has no record of your certificate: enrol again with a new join token"},
		// The user is not locked: only the serial check refuses this one.
		{name: "revoked, user unlocked", chain: e.revoke(e.cert(e.ca, identity.User, "alice", identity.User, "alice")), kinds: users, want: "your certificate was revoked by an administrator"},
		{name: "revoked agent certificate", chain: e.revoke(e.cert(e.ca, identity.Agent, "db-1", identity.Agent, "db-1")), kinds: agents, want: "your certificate was revoked by an administrator"},
		{name: "recorded for someone else", chain: e.cert(e.ca, identity.User, "alice", identity.User, "bob"), kinds: users, want: "your certificate does not match its record"},
		{name: "recorded for an agent of the same name", chain: e.cert(e.ca, identity.User, "db-1", identity.Agent, "db-1"), kinds: users, want: "your certificate does not match its record"},
		{name: "user gone", chain: e.cert(e.ca, identity.User, "zed", identity.User, "zed"), kinds: users, want: "user zed no longer exists"},
		{name: "user locked", chain: e.cert(e.ca, identity.User, "lara", identity.User, "lara"), kinds: users, want: "your account is locked: ask an administrator", locked: true},
		// Revoked and locked: the lock is named (the cause to act on), but
		// the certificate is not valid, so no caller that accepts a locked
		// peer (recording uploads) takes a revoked certificate.
		{name: "revoked, user locked", chain: e.revoke(e.cert(e.ca, identity.User, "lara", identity.User, "lara")), kinds: users, want: "your account is locked: ask an administrator", locked: true, certInvalid: true},
		{name: "revoked, agent locked", chain: e.revoke(e.cert(e.ca, identity.Agent, "db-9", identity.Agent, "db-9")), kinds: agents, want: "agent db-9 is locked by an administrator: tunnel admin agents unlock db-9", locked: true, certInvalid: true},
		{name: "agent not enrolled", chain: e.cert(e.ca, identity.Agent, "web-1", identity.Agent, "web-1"), kinds: agents, want: "agent web-1 is not enrolled here"},
		{name: "agent locked", chain: e.cert(e.ca, identity.Agent, "db-9", identity.Agent, "db-9"), kinds: agents, want: "agent db-9 is locked by an administrator: tunnel admin agents unlock db-9", locked: true},
		{name: "store failure", chain: alice, kinds: users, st: brokenStore{e.st}, want: "the gateway cannot check your certificate right now", intern: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, st := now, store.Store(e.st)
			if !tt.at.IsZero() {
				at = tt.at
			}
			if tt.st != nil {
				st = tt.st
			}
			p, err := Verify(context.Background(), st, e.ca, tt.chain, at, tt.kinds...)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v; want success", err)
				}
				leaf := tt.chain[0]
				id, _ := identity.ParseURI(leaf.URIs[0])
				if p.ID != id || p.Serial != certs.X509SerialHex(leaf) || !p.NotAfter.Equal(leaf.NotAfter) {
					t.Errorf("peer %+v; want %v, serial %s, not after %v", p, id, certs.X509SerialHex(leaf), leaf.NotAfter)
				}
				if (p.User != nil) != (id.Kind == identity.User) || p.User != nil && p.User.Name != id.Name {
					t.Errorf("peer user %+v for a %s", p.User, id.Kind)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Verify = %v; want a *peer.Error %q", err, tt.want)
			}
			if pe.Message != tt.want || pe.Locked != tt.locked || (pe.Internal != nil) != tt.intern {
				t.Errorf("refusal %q (locked %v, internal %v); want %q (locked %v, internal %v)",
					pe.Message, pe.Locked, pe.Internal, tt.want, tt.locked, tt.intern)
			}
			if wantValid := tt.locked && !tt.certInvalid; pe.CertValid != wantValid {
				t.Errorf("refusal %q: CertValid %v; want %v", pe.Message, pe.CertValid, wantValid)
			}
		})
	}
}

func TestPeerString(t *testing.T) {
	for _, tt := range []struct {
		kind identity.Kind
		want string
	}{{identity.User, "alice"}, {identity.Agent, "agent:alice"}} {
		p := Peer{ID: identity.ID{Cluster: cluster, Kind: tt.kind, Name: "alice"}}
		if got := p.String(); got != tt.want {
			t.Errorf("String() = %q; want %q", got, tt.want)
		}
	}
}

// A chain accepted once is remembered only for the CAs that accepted it:
// the same chain presented where another CA of the same cluster name is
// trusted (a rotation that dropped its issuer) is refused, and a chain
// accepted is not re-verified but still looked up in the store (revoked
// after it was remembered: refused).
func TestVerifyRemembersForTheSameTrustOnly(t *testing.T) {
	e := newEnv(t)
	alice := e.cert(e.ca, identity.User, "alice", identity.User, "alice")
	before := chains.Len()
	if _, err := Verify(context.Background(), e.st, e.ca, alice, now, identity.User); err != nil {
		t.Fatalf("Verify: %v; want success", err)
	}
	if chains.Len() != before+1 {
		t.Errorf("the accepted chain is not remembered: %d chains, want %d", chains.Len(), before+1)
	}
	_, err := Verify(context.Background(), e.st, e.other, alice, now, identity.User)
	var pe *Error
	if !errors.As(err, &pe) || pe.Message != "your certificate was not issued by this cluster" {
		t.Errorf("Verify against another CA after the chain was remembered = %v; want refused as not issued by this cluster", err)
	}
	e.revoke(alice)
	if _, err := Verify(context.Background(), e.st, e.ca, alice, now, identity.User); !errors.As(err, &pe) || pe.Message != "your certificate was revoked by an administrator" {
		t.Errorf("Verify of a remembered chain revoked since = %v; want refused as revoked", err)
	}
}
