package dbcreds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// fakeVault counts leases, renewals and revocations.
type fakeVault struct {
	mu       sync.Mutex
	n        int
	ttl      time.Duration
	renewTTL time.Duration
	renewed  []string
	revoked  []string
	leaseErr error
	gate     chan struct{} // if set, Lease waits for it
}

func (v *fakeVault) Lease(ctx context.Context, path string) (Credential, error) {
	if v.gate != nil {
		select {
		case <-v.gate:
		case <-ctx.Done():
			return Credential{}, ctx.Err()
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.leaseErr != nil {
		return Credential{}, v.leaseErr
	}
	v.n++
	return Credential{LeaseID: fmt.Sprintf("%s/l%d", path, v.n), User: fmt.Sprintf("v-%d", v.n), Password: wire.Secret(fmt.Sprintf("pw-%d", v.n)),
		TTL: v.ttl, Renewable: true}, nil
}

func (v *fakeVault) Renew(_ context.Context, id string, _ time.Duration) (time.Duration, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.renewed = append(v.renewed, id)
	if v.renewTTL != 0 {
		return v.renewTTL, nil
	}
	return v.ttl, nil
}

func (v *fakeVault) Revoke(_ context.Context, id string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.revoked = append(v.revoked, id)
	return nil
}

func (v *fakeVault) revokedList() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.revoked)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	app1  = identity.ID{Cluster: "c", Kind: identity.Agent, Name: "app-1"}
	app2  = identity.ID{Cluster: "c", Kind: identity.Agent, Name: "app-2"}
	alice = identity.ID{Cluster: "c", Kind: identity.User, Name: "alice"}
)

func key(caller identity.ID) Key {
	return Key{Caller: caller, Node: "db-1", Service: "orders", Path: "database/creds/orders-app"}
}

// TestShareRenewRevoke: streams of one caller share a lease, which is
// renewed while used and revoked a grace after the last stream; another
// caller gets its own.
func TestShareRenewRevoke(t *testing.T) {
	v := &fakeVault{ttl: 2 * time.Second}
	m := &Manager{Vault: v, Grace: 50 * time.Millisecond}
	defer m.Close()
	c1, rel1, err := m.Acquire(context.Background(), key(app1))
	if err != nil {
		t.Fatal(err)
	}
	c2, rel2, err := m.Acquire(context.Background(), key(app1))
	if err != nil || c2.LeaseID != c1.LeaseID {
		t.Fatalf("second stream: %v, lease %s; want the first's %s", err, c2.LeaseID, c1.LeaseID)
	}
	c3, rel3, err := m.Acquire(context.Background(), key(app2))
	if err != nil || c3.LeaseID == c1.LeaseID {
		t.Fatalf("another caller: %v, lease %s; want its own", err, c3.LeaseID)
	}
	waitUntil(t, "a renewal", func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return slices.Contains(v.renewed, c1.LeaseID)
	})
	rel1(false)
	rel1(false) // twice is once
	if len(v.revokedList()) != 0 {
		t.Fatal("revoked while a stream uses it")
	}
	rel2(false)
	waitUntil(t, "the revocation after the grace", func() bool { return slices.Contains(v.revokedList(), c1.LeaseID) })
	if slices.Contains(v.revokedList(), c3.LeaseID) {
		t.Error("app-2's lease revoked with app-1's")
	}
	c4, rel4, err := m.Acquire(context.Background(), key(app1))
	if err != nil || c4.LeaseID == c1.LeaseID {
		t.Fatalf("after the revocation: %v, lease %s; want a new one", err, c4.LeaseID)
	}
	rel4(false)
	rel3(false)
}

// TestReuseWithinGrace: a stream that comes within the grace takes the
// unused lease again, and it is not revoked.
func TestReuseWithinGrace(t *testing.T) {
	v := &fakeVault{ttl: time.Hour}
	m := &Manager{Vault: v, Grace: time.Hour}
	defer m.Close()
	c1, rel, _ := m.Acquire(context.Background(), key(app1))
	rel(false)
	c2, rel2, err := m.Acquire(context.Background(), key(app1))
	if err != nil || c2.LeaseID != c1.LeaseID {
		t.Fatalf("%v %s %s", err, c1.LeaseID, c2.LeaseID)
	}
	rel2(false)
	if len(v.revokedList()) != 0 {
		t.Error("revoked within the grace")
	}
}

// TestCutRevokesAtOnce: a stream cut by a revocation revokes its lease
// at once, even while other streams of it live.
func TestCutRevokesAtOnce(t *testing.T) {
	v := &fakeVault{ttl: time.Hour}
	m := &Manager{Vault: v, Grace: time.Hour}
	defer m.Close()
	c1, rel1, _ := m.Acquire(context.Background(), key(app1))
	_, rel2, _ := m.Acquire(context.Background(), key(app1))
	rel1(true)
	waitUntil(t, "the revocation", func() bool { return slices.Contains(v.revokedList(), c1.LeaseID) })
	rel2(false)
	if n := len(v.revokedList()); n != 1 {
		t.Errorf("%d revocations; want 1", n)
	}
	if m.Count() != 0 {
		t.Errorf("%d leases held", m.Count())
	}
}

// TestKillerRevokes: locking an agent revokes the leases it holds as
// caller and those of streams to it; locking a user revokes theirs.
func TestKillerRevokes(t *testing.T) {
	v := &fakeVault{ttl: time.Hour}
	m := &Manager{Vault: v, Grace: time.Hour}
	defer m.Close()
	c1, rel1, _ := m.Acquire(context.Background(), key(app1))
	c2, rel2, _ := m.Acquire(context.Background(), key(app2))
	c3, rel3, _ := m.Acquire(context.Background(), key(alice))
	defer rel1(false)
	defer rel2(false)
	defer rel3(false)
	m.EndAgent("app-1", "locked")
	waitUntil(t, "app-1's revocation", func() bool { return slices.Contains(v.revokedList(), c1.LeaseID) })
	m.EndUser("app-2", "locked") // a user named like the agent: not it
	m.EndUser("alice", "locked")
	waitUntil(t, "alice's revocation", func() bool { return slices.Contains(v.revokedList(), c3.LeaseID) })
	if slices.Contains(v.revokedList(), c2.LeaseID) {
		t.Fatal("app-2's lease revoked")
	}
	m.EndAgent("db-1", "locked") // the database's agent
	waitUntil(t, "the revocation of streams to db-1", func() bool { return slices.Contains(v.revokedList(), c2.LeaseID) })
}

// TestRevokedWhileLeasing: a lock that comes while Vault answers revokes
// the new lease, and the stream is refused.
func TestRevokedWhileLeasing(t *testing.T) {
	v := &fakeVault{ttl: time.Hour, gate: make(chan struct{})}
	m := &Manager{Vault: v, Grace: time.Hour}
	defer m.Close()
	errc := make(chan error, 1)
	go func() {
		_, _, err := m.Acquire(context.Background(), key(app1))
		errc <- err
	}()
	waitUntil(t, "the lease to start", func() bool { return m.Count() == 1 })
	m.EndAgent("app-1", "locked")
	close(v.gate)
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "revoked as it was leased") {
		t.Fatalf("Acquire = %v; want a refusal", err)
	}
	waitUntil(t, "the revocation", func() bool { return len(v.revokedList()) == 1 })
}

// TestLeaseErrors: Vault's refusal is said with the path; a path outside
// the allowed mounts is refused before Vault is asked.
func TestLeaseErrors(t *testing.T) {
	v := &fakeVault{ttl: time.Hour, leaseErr: errors.New("Vault at http://v: permission denied")}
	m := &Manager{Vault: v}
	defer m.Close()
	_, _, err := m.Acquire(context.Background(), key(app1))
	if err == nil || err.Error() != "cannot lease a database credential from Vault at database/creds/orders-app: Vault at http://v: permission denied" {
		t.Errorf("Acquire = %v", err)
	}
	k := key(app1)
	k.Path = "secret/creds/x"
	if _, _, err := m.Acquire(context.Background(), k); err == nil || !strings.Contains(err.Error(), `Vault mount "secret" is not one this gateway leases database credentials from`) {
		t.Errorf("Acquire(other mount) = %v", err)
	}
	k.Path = "sys/raw/x"
	if _, _, err := m.Acquire(context.Background(), k); err == nil || !strings.Contains(err.Error(), "is not a Vault database credential path") {
		t.Errorf("Acquire(not creds) = %v", err)
	}
	if v.n != 0 {
		t.Errorf("Vault was asked %d times", v.n)
	}
}

// TestStaleLeaseReplaced: a lease near its end (Vault stopped extending
// it: its max TTL) is not given to new streams; it is revoked once its
// last stream ends.
func TestStaleLeaseReplaced(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	v := &fakeVault{ttl: 100 * time.Second}
	m := &Manager{Vault: v, Grace: time.Hour, Clock: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	defer m.Close()
	c1, rel1, _ := m.Acquire(context.Background(), key(app1))
	mu.Lock()
	now = now.Add(95 * time.Second)
	mu.Unlock()
	c2, rel2, err := m.Acquire(context.Background(), key(app1))
	if err != nil || c2.LeaseID == c1.LeaseID {
		t.Fatalf("%v: lease %s; want a new one", err, c2.LeaseID)
	}
	rel1(false)
	waitUntil(t, "the old lease's revocation", func() bool { return slices.Contains(v.revokedList(), c1.LeaseID) })
	rel2(false)
}

// TestCloseRevokesAll: Close revokes every lease, and Acquire is refused
// after.
func TestCloseRevokesAll(t *testing.T) {
	v := &fakeVault{ttl: time.Hour}
	m := &Manager{Vault: v, Grace: time.Hour}
	_, rel, _ := m.Acquire(context.Background(), key(app1))
	_, _, _ = m.Acquire(context.Background(), key(alice))
	m.Close()
	m.Close()
	rel(false)
	if n := len(v.revokedList()); n != 2 {
		t.Errorf("%d revocations; want 2", n)
	}
	if _, _, err := m.Acquire(context.Background(), key(app1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close = %v", err)
	}
}
