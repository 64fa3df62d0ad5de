package apiserver

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/policy"
)

// handleListNodes lists the nodes the caller may reach and, on each, the
// services their roles allow. Admins see every node and service. A node
// is listed when the caller's roles name it (Nodes) or allow one of its
// services. Services are known only while the node's agent is connected,
// so an offline node is listed, without services, when a service pattern
// of the caller's roles could match it.
func (s *Server) handleListNodes(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var nodePatterns, servicePatterns []string
	for _, rn := range c.user.Roles {
		ro, err := s.Store.GetRole(r.Context(), rn)
		if err != nil {
			s.fail(w, r, fmt.Errorf("read role %s: %w", rn, err))
			return
		}
		nodePatterns = append(nodePatterns, ro.Nodes...)
		servicePatterns = append(servicePatterns, ro.Services...)
	}
	agents, err := s.Store.ListAgents(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	online := s.online()
	out := []api.Node{}
	for _, a := range agents {
		p := online[a.Name]
		n := api.Node{Name: a.Name, Online: p.Online, Services: []string{}}
		for _, sv := range p.Services {
			if c.admin || policy.AllowedByPatterns(servicePatterns, a.Name, sv) {
				n.Services = append(n.Services, sv)
			}
		}
		visible := c.admin || len(n.Services) > 0 || matchesAny(nodePatterns, a.Name) ||
			!p.Online && matchesNodeOf(servicePatterns, a.Name)
		if !visible {
			continue
		}
		out = append(out, n)
	}
	writeJSON(w, 200, out)
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if policy.Match(p, name) {
			return true
		}
	}
	return false
}

// matchesNodeOf reports whether the node part of any "node/service"
// pattern matches node.
func matchesNodeOf(patterns []string, node string) bool {
	for _, p := range patterns {
		if n, _, ok := strings.Cut(p, "/"); ok && policy.Match(n, node) {
			return true
		}
	}
	return false
}
