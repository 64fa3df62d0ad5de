package apiserver

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

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
		PortForwarding: ro.PortForwarding, AgentForwarding: ro.AgentForwarding}
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
	return store.Role{Name: name, Logins: logins, MaxTTL: max, Admin: in.Admin,
		Nodes: slices.Compact(nodes), Services: slices.Compact(services),
		PortForwarding: in.PortForwarding, AgentForwarding: in.AgentForwarding}, nil
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
		"nodes": strings.Join(ro.Nodes, ","), "services": strings.Join(ro.Services, ",")}
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
	w.WriteHeader(http.StatusNoContent)
}
