package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// online returns the connected agents, or none without a Presence.
func (s *Server) online() map[string]api.Agent {
	if s.Presence == nil {
		return nil
	}
	return s.Presence.Online()
}

// agentOut merges an agent's record with its presence (zero when offline).
func agentOut(a store.Agent, p api.Agent) api.Agent {
	out := api.Agent{Name: a.Name, Locked: a.Locked, Online: p.Online, Since: p.Since,
		Services: slices.Clone(p.Services), CreatedAt: a.CreatedAt, EnrolledAt: a.EnrolledAt,
		Direct: p.Direct, DirectStreams: p.DirectStreams, RelayedStreams: p.RelayedStreams, TrustEpoch: p.TrustEpoch}
	if out.Services == nil {
		out.Services = []string{}
	}
	if !a.LastSeen.IsZero() {
		t := a.LastSeen
		out.LastSeen = &t
	}
	return out
}

func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.Store.ListAgents(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	online := s.online()
	out := make([]api.Agent, 0, len(agents))
	for _, a := range agents {
		out = append(out, agentOut(a, online[a.Name]))
	}
	writeJSON(w, 200, out)
}

func (s *Server) handleLockAgent(lock bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := audit.AgentUnlocked
		if lock {
			t = audit.AgentLocked
		}
		name := identity.CanonicalName(r.PathValue("name"))
		if err := identity.ValidateName("agent", name); err != nil {
			s.fail(w, r, badRequest(err.Error()))
			return
		}
		err := s.Store.SetAgentLocked(r.Context(), name, lock, s.adminEvent(r, t, name))
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.fail(w, r, notFound(fmt.Sprintf("no agent %s has enrolled here (see tunnel admin agents ls)", name)))
			return
		case err != nil:
			s.fail(w, r, err)
			return
		}
		if lock && s.Sessions != nil {
			// Live access dies now, not at the next connection.
			if err := s.Sessions.RevokeAgent(r.Context(), name, callerFrom(r.Context()).user.Name); err != nil {
				s.fail(w, r, fmt.Errorf("agent %s is locked, but revoking its live access failed: %w", name, err))
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
