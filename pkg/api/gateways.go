package api

import "time"

// PathAdminGateways lists the gateways of the cluster (GET, admin).
const PathAdminGateways = "/v1/admin/gateways"

// CodeStoreUnavailable: the gateway could not reach its store (PostgreSQL
// down or unreachable); the request may be retried.
const CodeStoreUnavailable = "store_unavailable"

// Gateway is one gateway of the cluster, as its heartbeats describe it.
type Gateway struct {
	ID       string `json:"id"`
	APIAddr  string `json:"api_addr"`
	QUICAddr string `json:"quic_addr"`
	SSHAddr  string `json:"ssh_addr,omitempty"`
	Version  string `json:"version"`
	// StartedAt and LastHeartbeat are in UTC.
	StartedAt     time.Time `json:"started_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Alive: the last heartbeat is recent enough (within three of the
	// gateway's heartbeat intervals, 30 s by default).
	Alive bool `json:"alive"`
}

// GatewayList answers GET PathAdminGateways.
type GatewayList struct {
	Gateways []Gateway `json:"gateways"`
}
