package apiserver_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// TestAdminLiftsOwnLockout: five wrong passwords from anyone lock a name
// out; an admin still holding a valid certificate can lift their own
// lockout (they cannot be locked by an administrator and signed in), but
// cannot lock themselves.
func TestAdminLiftsOwnLockout(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	ctx := context.Background()
	name := "admin"
	if w := s.do(admin, "GET", "/v1/whoami", nil); w.status == http.StatusOK {
		var who api.Whoami
		w.decode(t, &who)
		name = who.User
	}
	for range 5 {
		if _, err := s.store.ReserveLoginAttempt(ctx, name, time.Now(), 5, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if f, _ := s.store.LoginFailures(ctx, name); !f.LockedUntil.After(time.Now()) {
		t.Fatalf("%s is not locked out after five attempts: %+v", name, f)
	}
	if r := s.do(admin, "POST", api.PathUsers+"/"+name+"/unlock", nil); r.status != http.StatusNoContent {
		t.Fatalf("unlock own account: got %d (%s); want 204", r.status, r.body)
	}
	if f, _ := s.store.LoginFailures(ctx, name); f.Count != 0 || !f.LockedUntil.IsZero() {
		t.Errorf("lockout after unlocking oneself: %+v; want none", f)
	}
	wantError(t, s.do(admin, "POST", api.PathUsers+"/"+name+"/lock", nil), 400, api.CodeBadRequest, "you cannot lock your own account")
}
