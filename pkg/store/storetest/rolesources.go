package storetest

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// testRoleSources: a role's Sources survive CreateRole, UpdateRole (set,
// changed, cleared) and ListRoles, in their order; a role created without
// them comes back without.
func testRoleSources(t *testing.T, s store.Store) {
	ctx := t.Context()
	ev := func(typ audit.Type) audit.Event {
		return audit.Event{Time: t0, Type: typ, Actor: "admin", Outcome: audit.Success}
	}
	office := store.Role{Name: "office", Logins: []string{"ubuntu"}, Nodes: []string{"*"},
		Sources: []string{"10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"}, CreatedAt: t0}
	if err := s.CreateRole(ctx, office, ev(audit.RoleCreated)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRole(ctx, store.Role{Name: "anywhere", Logins: []string{"ubuntu"}, CreatedAt: t0}, ev(audit.RoleCreated)); err != nil {
		t.Fatal(err)
	}
	sources := func(name string) []string {
		t.Helper()
		r, err := s.GetRole(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return r.Sources
	}
	if got := sources("office"); !cmp.Equal(got, office.Sources) {
		t.Errorf("office.Sources = %q; want %q", got, office.Sources)
	}
	if got := sources("anywhere"); len(got) != 0 {
		t.Errorf("anywhere.Sources = %q; want none", got)
	}
	office.Sources = []string{"127.0.0.3/32"}
	if err := s.UpdateRole(ctx, office, ev(audit.RoleUpdated)); err != nil {
		t.Fatal(err)
	}
	if got := sources("office"); !cmp.Equal(got, office.Sources) {
		t.Errorf("after UpdateRole office.Sources = %q; want %q", got, office.Sources)
	}
	roles, err := s.ListRoles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		if r.Name == "office" && !cmp.Equal(r.Sources, office.Sources) {
			t.Errorf("ListRoles: office.Sources = %q; want %q", r.Sources, office.Sources)
		}
	}
	office.Sources = nil
	if err := s.UpdateRole(ctx, office, ev(audit.RoleUpdated)); err != nil {
		t.Fatal(err)
	}
	if got := sources("office"); len(got) != 0 {
		t.Errorf("after clearing, office.Sources = %q; want none", got)
	}
}
