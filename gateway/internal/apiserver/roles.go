package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

func (s *Server) handleListRoles(w http.ResponseWriter, r *http.Request) {
	roles, err := s.Store.ListRoles(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]api.Role, 0, len(roles))
	for _, ro := range roles {
		out = append(out, roleOut(ro))
	}
	writeJSON(w, 200, out)
}

func roleOut(ro store.Role) api.Role {
	logins := ro.Logins
	if logins == nil {
		logins = []string{}
	}
	return api.Role{Name: ro.Name, Logins: logins, MaxTTL: api.Duration(ro.MaxTTL), Admin: ro.Admin,
		Nodes: slices.Clone(ro.Nodes), Services: slices.Clone(ro.Services), CreatedAt: ro.CreatedAt,
		PortForwarding: ro.PortForwarding, AgentForwarding: ro.AgentForwarding,
		Approve: slices.Clone(ro.Approve), Sudo: ro.Sudo, Sources: slices.Clone(ro.Sources)}
}

// CheckRole validates and normalises a role definition.
func CheckRole(in api.Role, clusterMax time.Duration) (store.Role, error) {
	name := identity.CanonicalName(in.Name)
	if err := identity.ValidateName("role", name); err != nil {
		return store.Role{}, err
	}
	var logins []string
	for _, l := range in.Logins {
		l = strings.TrimSpace(l)
		// Logins become SSH principals and OS user names: the same rules as
		// user names, so no wildcard, comma or space can sneak in.
		if err := identity.ValidateName("login", l); err != nil {
			return store.Role{}, err
		}
		logins = append(logins, l)
	}
	slices.Sort(logins)
	logins = slices.Compact(logins)
	max := time.Duration(in.MaxTTL)
	if max > clusterMax {
		return store.Role{}, fmt.Errorf("max TTL %s exceeds the cluster maximum of %s", max, clusterMax)
	}
	if max != 0 && max < time.Minute {
		return store.Role{}, fmt.Errorf("max TTL %s is shorter than a minute", max)
	}
	var nodes, services []string
	for _, n := range in.Nodes {
		n, err := checkNamePattern("node", n)
		if err != nil {
			return store.Role{}, err
		}
		nodes = append(nodes, n)
	}
	for _, sv := range in.Services {
		sv, err := checkTarget(sv)
		if err != nil {
			return store.Role{}, fmt.Errorf("service %w", err)
		}
		services = append(services, sv)
	}
	slices.Sort(nodes)
	slices.Sort(services)
	var approve []string
	for _, a := range in.Approve {
		a = identity.CanonicalName(strings.TrimSpace(a))
		if err := identity.ValidateName("approved role", a); err != nil {
			return store.Role{}, err
		}
		approve = append(approve, a)
	}
	slices.Sort(approve)
	if in.Sudo && len(logins) == 0 {
		return store.Role{}, errors.New("sudo needs a login to give it to: add --login")
	}
	sources, err := checkSources(in.Sources)
	if err != nil {
		return store.Role{}, err
	}
	return store.Role{Name: name, Logins: logins, MaxTTL: max, Admin: in.Admin,
		Nodes: slices.Compact(nodes), Services: slices.Compact(services),
		PortForwarding: in.PortForwarding, AgentForwarding: in.AgentForwarding,
		Approve: slices.Compact(approve), Sudo: in.Sudo, Sources: sources}, nil
}

func (s *Server) handleCreateRole(w http.ResponseWriter, r *http.Request) {
	var in api.Role
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	ro, err := CheckRole(in, s.CA.MaxTTL())
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	ro.CreatedAt = s.now()
	ev := s.adminEvent(r, audit.RoleCreated, ro.Name)
	ev.Details = map[string]string{"logins": strings.Join(ro.Logins, ","), "max_ttl": ro.MaxTTL.String(), "admin": fmt.Sprint(ro.Admin),
		"nodes": strings.Join(ro.Nodes, ","), "services": strings.Join(ro.Services, ","),
		"approve": strings.Join(ro.Approve, ","), "sudo": fmt.Sprint(ro.Sudo), "sources": strings.Join(ro.Sources, ",")}
	if err := s.Store.CreateRole(r.Context(), ro, ev); err != nil {
		s.fail(w, r, storeError(err, "create role "+ro.Name))
		return
	}
	writeJSON(w, http.StatusCreated, roleOut(ro))
}

func (s *Server) handleDeleteRole(w http.ResponseWriter, r *http.Request) {
	name := identity.CanonicalName(r.PathValue("name"))
	if err := identity.ValidateName("role", name); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	if err := s.Store.DeleteRole(r.Context(), name, s.adminEvent(r, audit.RoleDeleted, name)); err != nil {
		s.fail(w, r, storeError(err, "remove role "+name))
		return
	}
	// Live sessions and streams that only this role allowed end now.
	if err := s.policyChanged(r, "role "+name+" was removed"); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleUpdateRole changes the fields of a role that the request sets. The
// next login of its holders gets the new grant; the admin API reads roles
// at every request, so an admin flag takes effect at once.
func (s *Server) handleUpdateRole(w http.ResponseWriter, r *http.Request) {
	name := identity.CanonicalName(r.PathValue("name"))
	if err := identity.ValidateName("role", name); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	var in api.RoleUpdate
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	if in.Empty() {
		s.fail(w, r, badRequest("nothing to change: set at least one of logins, max_ttl, admin, nodes, services, port_forwarding, agent_forwarding, approve, sudo and sources"))
		return
	}
	cur, err := s.Store.GetRole(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, notFound(fmt.Sprintf("there is no role %s (tunnel admin roles ls lists them; roles add creates one)", name)))
		return
	} else if err != nil {
		s.fail(w, r, storeError(err, "update role "+name))
		return
	}
	next, changed := applyRoleUpdate(roleOut(cur), in)
	ro, err := CheckRole(next, s.CA.MaxTTL())
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	ro.CreatedAt = cur.CreatedAt
	if cur.Admin && !ro.Admin {
		others := slices.DeleteFunc(slices.Clone(callerFrom(r.Context()).user.Roles), func(rn string) bool { return rn == name })
		keeps, err := s.anyAdmin(r.Context(), others)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !keeps {
			s.fail(w, r, badRequest(fmt.Sprintf("taking the admin flag from role %s would take the admin API away from you: ask another admin", name)))
			return
		}
	}
	ev := s.adminEvent(r, audit.RoleUpdated, ro.Name)
	ev.Details = map[string]string{"changed": strings.Join(changed, ","),
		"logins": strings.Join(ro.Logins, ","), "max_ttl": ro.MaxTTL.String(), "admin": fmt.Sprint(ro.Admin),
		"nodes": strings.Join(ro.Nodes, ","), "services": strings.Join(ro.Services, ","),
		"port_forwarding": fmt.Sprint(ro.PortForwarding), "agent_forwarding": fmt.Sprint(ro.AgentForwarding),
		"approve": strings.Join(ro.Approve, ","), "sudo": fmt.Sprint(ro.Sudo), "sources": strings.Join(ro.Sources, ",")}
	if err := s.Store.UpdateRole(r.Context(), ro, ev); err != nil {
		s.fail(w, r, storeError(err, "update role "+name))
		return
	}
	// Live sessions and streams the role no longer allows end now.
	if err := s.policyChanged(r, "role "+name+" was updated"); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, roleOut(ro))
}

// applyRoleUpdate returns role with the fields in sets, and the names of
// those fields.
func applyRoleUpdate(role api.Role, in api.RoleUpdate) (api.Role, []string) {
	var changed []string
	if in.Logins != nil {
		role.Logins, changed = slices.Clone(*in.Logins), append(changed, "logins")
	}
	if in.MaxTTL != nil {
		role.MaxTTL, changed = *in.MaxTTL, append(changed, "max_ttl")
	}
	if in.Admin != nil {
		role.Admin, changed = *in.Admin, append(changed, "admin")
	}
	if in.Nodes != nil {
		role.Nodes, changed = slices.Clone(*in.Nodes), append(changed, "nodes")
	}
	if in.Services != nil {
		role.Services, changed = slices.Clone(*in.Services), append(changed, "services")
	}
	if in.PortForwarding != nil {
		role.PortForwarding, changed = *in.PortForwarding, append(changed, "port_forwarding")
	}
	if in.AgentForwarding != nil {
		role.AgentForwarding, changed = *in.AgentForwarding, append(changed, "agent_forwarding")
	}
	if in.Approve != nil {
		role.Approve, changed = slices.Clone(*in.Approve), append(changed, "approve")
	}
	if in.Sudo != nil {
		role.Sudo, changed = *in.Sudo, append(changed, "sudo")
	}
	if in.Sources != nil {
		role.Sources, changed = slices.Clone(*in.Sources), append(changed, "sources")
	}
	return role, changed
}

// checkSources validates a role's source networks and normalises each to
// its network (10.1.2.3/8 becomes 10.0.0.0/8; a bare address is a /32 or
// /128), sorted, without duplicates.
func checkSources(in []string) ([]string, error) {
	var out []string
	for _, src := range in {
		p, err := access.ParseSource(src)
		if err != nil {
			return nil, err
		}
		out = append(out, p.String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// anyAdmin reports whether any of roles grants the admin API. It keeps an
// admin from taking the admin API away from themselves by mistake, which
// only another admin could undo.
func (s *Server) anyAdmin(ctx context.Context, roles []string) (bool, error) {
	for _, rn := range roles {
		ro, err := s.Store.GetRole(ctx, rn)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if ro.Admin {
			return true, nil
		}
	}
	return false, nil
}
