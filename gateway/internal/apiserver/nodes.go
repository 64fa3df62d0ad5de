package apiserver

import (
	"fmt"
	"net/http"
)

// handleListNodes lists the nodes the caller may reach and, on each, the
// services their roles allow: access.Decider.Visible decides.
func (s *Server) handleListNodes(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	agents, err := s.Store.ListAgents(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := s.Login.Decider().Visible(r.Context(), c.user, c.admin, agents, s.online())
	if err != nil {
		s.fail(w, r, fmt.Errorf("list nodes: %w", err))
		return
	}
	writeJSON(w, 200, out)
}
