package apiserver

import (
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestGatewayListAlive: a gateway is alive while its last heartbeat is
// younger than its AliveFor, and listed with its advertised addresses.
func TestGatewayListAlive(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	gws := []store.Gateway{
		{ID: "a", APIAddr: "10.0.0.1:8443", QUICAddr: "10.0.0.1:8443", HeartbeatAt: now.Add(-29 * time.Second), AliveFor: 30 * time.Second},
		{ID: "b", APIAddr: "10.0.0.2:8443", QUICAddr: "10.0.0.2:8443", SSHAddr: "10.0.0.2:2222", HeartbeatAt: now.Add(-31 * time.Second), AliveFor: 30 * time.Second},
	}
	got := gatewayList(gws, now).Gateways
	if len(got) != 2 || !got[0].Alive || got[1].Alive {
		t.Fatalf("gatewayList = %+v; want a alive, b not", got)
	}
	if got[1].SSHAddr != "10.0.0.2:2222" || got[1].APIAddr != "10.0.0.2:8443" || !got[1].LastHeartbeat.Equal(gws[1].HeartbeatAt) {
		t.Errorf("gateway b listed as %+v", got[1])
	}
	if l := gatewayList(nil, now); l.Gateways == nil {
		t.Error("an empty list is null in JSON; want []")
	}
}
