package apiserver

import (
	"net/http"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// handleListGateways lists the gateways of the cluster as their heartbeats
// describe them, with whether each is alive (a heartbeat within three of
// its intervals).
func (s *Server) handleListGateways(w http.ResponseWriter, r *http.Request) {
	gws, err := s.Store.ListGateways(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, gatewayList(gws, s.now()))
}

// gatewayList converts the store's records for the API, as of now.
func gatewayList(gws []store.Gateway, now time.Time) api.GatewayList {
	out := api.GatewayList{Gateways: make([]api.Gateway, 0, len(gws))}
	for _, g := range gws {
		out.Gateways = append(out.Gateways, api.Gateway{
			ID: g.ID, APIAddr: g.APIAddr, QUICAddr: g.QUICAddr, SSHAddr: g.SSHAddr, Version: g.Version,
			StartedAt: g.StartedAt.UTC(), LastHeartbeat: g.HeartbeatAt.UTC(), Alive: g.Alive(now),
		})
	}
	return out
}
