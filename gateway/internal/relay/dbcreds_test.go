package relay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/dbcreds"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// fakeCreds hands out numbered credentials and records their releases.
type fakeCreds struct {
	mu       sync.Mutex
	acquired []dbcreds.Key
	released []bool // the revoke flag of each release
}

func (f *fakeCreds) Acquire(_ context.Context, k dbcreds.Key) (dbcreds.Credential, func(bool), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquired = append(f.acquired, k)
	n := len(f.acquired)
	return dbcreds.Credential{LeaseID: fmt.Sprintf("database/creds/orders/lease-%d", n), User: fmt.Sprintf("v-%d", n),
			Password: wire.Secret(fmt.Sprintf("secret-pw-%d", n))}, func(revoke bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.released = append(f.released, revoke)
		}, nil
}

func (f *fakeCreds) state() (int, []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acquired), append([]bool(nil), f.released...)
}

// TestDBCredsRelayed: a stream to a service that names a Vault path gets
// a credential for its caller, which reaches the target agent in the
// deliver header; the audit event names the lease and the user, not the
// password; the lease is released when the stream ends, and released for
// revocation when the gateway cuts the stream. A denied stream leases
// nothing.
func TestDBCredsRelayed(t *testing.T) {
	creds := &fakeCreds{}
	h := newHarness(t, harnessOpts{configure: func(s *Server) { s.DBCreds = creds }})
	var (
		mu  sync.Mutex
		got []wire.Header
	)
	h.startAgent("db-1", map[string]handler{"orders": func(hd wire.Header, st *quic.Stream) {
		mu.Lock()
		got = append(got, hd)
		mu.Unlock()
		echo(hd, st)
	}})
	setCredentials(t, h, "db-1", wire.Service{Name: "orders", Protocol: "postgres", Credentials: "database/creds/orders"})
	h.addUser("alice", "db-1/orders")
	h.addUser("mallory")
	alice := h.dial(h.cert(identity.User, "alice"))

	st, rep, err := open(t, alice, "db-1/orders", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("open: %+v %v", rep, err)
	}
	roundTrip(t, st, "hello")
	waitFor(t, "the lease released", func() bool { _, r := creds.state(); return len(r) == 1 })
	if _, r := creds.state(); r[0] {
		t.Error("a stream that ended by itself asked for its lease's revocation")
	}
	mu.Lock()
	if len(got) != 1 || got[0].DBUser != "v-1" || got[0].DBPassword.Reveal() != "secret-pw-1" {
		t.Errorf("the target got %+v; want the leased credential", got)
	}
	mu.Unlock()
	creds.mu.Lock()
	if k := creds.acquired[0]; k.Caller.Name != "alice" || k.Caller.Kind != identity.User || k.Node != "db-1" || k.Service != "orders" || k.Path != "database/creds/orders" {
		t.Errorf("leased for %+v", k)
	}
	creds.mu.Unlock()
	evs := h.events(audit.StreamAllowed)
	if len(evs) != 1 || evs[0].Details["lease"] != "database/creds/orders/lease-1" || evs[0].Details["db_user"] != "v-1" {
		t.Fatalf("stream.allowed events %+v; want one naming the lease and user", evs)
	}
	for k, v := range evs[0].Details {
		if strings.Contains(v, "secret-pw") {
			t.Errorf("the audit event's %s holds the password", k)
		}
	}

	// Cut by the gateway (alice locked): released for revocation.
	st, rep, err = open(t, alice, "db-1/orders", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("open: %+v %v", rep, err)
	}
	waitFor(t, "the stream tracked", func() bool {
		return len(h.srv.streamsWhere(func(l *liveStream) bool { return l.user == "alice" })) == 1
	})
	h.srv.EndUser("alice", "locked")
	waitFor(t, "the lease released", func() bool { _, r := creds.state(); return len(r) == 2 })
	if _, r := creds.state(); !r[1] {
		t.Error("a stream cut by a lock did not ask for its lease's revocation")
	}
	st.CancelRead(0)

	// Denied: nothing leased.
	mallory := h.dial(h.cert(identity.User, "mallory"))
	if _, rep, _ := open(t, mallory, "db-1/orders", "", nil); rep.Status != wire.StatusDenied {
		t.Errorf("mallory: %+v; want denied", rep)
	}
	if n, _ := creds.state(); n != 2 {
		t.Errorf("%d leases; a denied stream leased one", n)
	}
	if strings.Contains(h.logs.String(), "secret-pw") {
		t.Error("the relay logged a password")
	}
}

// TestDBCredsWithoutVault: without DBCreds, a stream to such a service is
// refused with a sentence that says what to do.
func TestDBCredsWithoutVault(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.startAgent("db-1", map[string]handler{"orders": echo})
	setCredentials(t, h, "db-1", wire.Service{Name: "orders", Credentials: "database/creds/orders"})
	h.addUser("alice", "db-1/orders")
	_, rep, err := open(t, h.dial(h.cert(identity.User, "alice")), "db-1/orders", "", nil)
	want := "service orders on db-1 logs in to its database with a credential from Vault (database/creds/orders), and this gateway has no Vault: start it with --vault-addr"
	if err != nil || rep.Status != wire.StatusUnavailable || rep.Message != want {
		t.Errorf("open: %+v %v; want unavailable: %s", rep, err, want)
	}
}

// setCredentials replaces the catalogue of a fake agent (whose hello
// names no credentials), once the relay has registered it: register
// reads the catalogue it logs without the registry's lock.
func setCredentials(t *testing.T, h *harness, node string, svcs ...wire.Service) {
	t.Helper()
	waitFor(t, "the agent registered", func() bool { return strings.Contains(h.logs.String(), `msg="agent connected" agent=`+node+" ") })
	h.srv.reg.setServices(h.srv.lookup(node), svcs)
}
