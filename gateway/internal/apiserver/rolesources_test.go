package apiserver

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
)

// TestCheckRoleSources: a role's source networks are normalised (masked,
// a bare address a /32), sorted and deduplicated; anything that is not a
// network is refused with a sentence naming it; an update sets and clears
// them.
func TestCheckRoleSources(t *testing.T) {
	in := api.Role{Name: "office", Logins: []string{"ubuntu"}, Sources: []string{"192.168.1.7/24", "10.0.0.0/8", "10.1.2.3", "10.0.0.0/8"}}
	r, err := CheckRole(in, certs.ClusterMaxTTL)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.0/8", "10.1.2.3/32", "192.168.1.0/24"}; !cmp.Equal(r.Sources, want) {
		t.Errorf("Sources = %q; want %q", r.Sources, want)
	}
	in.Sources = []string{"10.0.0.0/8", "office-lan"}
	if _, err := CheckRole(in, certs.ClusterMaxTTL); err == nil || !strings.Contains(err.Error(), `source "office-lan" is not a network`) {
		t.Errorf("CheckRole with a name for a source = %v; want a refusal naming it", err)
	}
	next, changed := applyRoleUpdate(roleOut(r), api.RoleUpdate{Sources: &[]string{}})
	if len(next.Sources) != 0 || !cmp.Equal(changed, []string{"sources"}) {
		t.Errorf("clearing sources: %v, changed %v", next.Sources, changed)
	}
	if (api.RoleUpdate{Sources: &[]string{}}).Empty() {
		t.Error("an update of sources alone is Empty")
	}
}
