package gateway

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// Defaults of the cluster membership.
const (
	// DefaultHeartbeatInterval: one store write per gateway every 10 s.
	DefaultHeartbeatInterval = 10 * time.Second
	// AliveIntervals heartbeats missed in a row make a gateway not alive
	// (30 s by default).
	AliveIntervals = 3
	// DefaultReconcileInterval is the safety-net sweep of fanout.go.
	DefaultReconcileInterval = 60 * time.Second
)

// advertised returns this gateway's record for its heartbeat.
func (g *Gateway) advertised(now time.Time) store.Gateway {
	apiPort := g.ln.Addr().(*net.TCPAddr).Port
	quicPort := g.udp.LocalAddr().(*net.UDPAddr).Port
	bound := func(a net.Addr) string { return a.String() }
	rec := store.Gateway{ID: g.cfg.ID, APIAddr: bound(g.ln.Addr()), QUICAddr: bound(g.udp.LocalAddr()),
		Version: g.cfg.Version, StartedAt: g.started, HeartbeatAt: now,
		AliveFor: AliveIntervals * g.cfg.HeartbeatInterval}
	if g.sshLn != nil {
		rec.SSHAddr = bound(g.sshLn.Addr())
	}
	if adv := g.cfg.AdvertiseAddr; adv != "" {
		host, port, err := net.SplitHostPort(adv)
		if err != nil {
			host, port = adv, strconv.Itoa(apiPort)
		}
		rec.APIAddr = net.JoinHostPort(host, port)
		rec.QUICAddr = net.JoinHostPort(host, strconv.Itoa(quicPort))
		if port != strconv.Itoa(apiPort) && quicPort == apiPort {
			rec.QUICAddr = rec.APIAddr // one port for both, mapped
		}
		if g.sshLn != nil {
			rec.SSHAddr = net.JoinHostPort(host, strconv.Itoa(g.sshLn.Addr().(*net.TCPAddr).Port))
		}
	}
	return rec
}

// join records this gateway in the store, refusing an id that a live
// gateway elsewhere already uses.
func (g *Gateway) join(ctx context.Context) error {
	now := g.cfg.Clock()
	rec := g.advertised(now)
	gws, err := g.store.ListGateways(ctx)
	if err != nil {
		return fmt.Errorf("list the cluster's gateways: %w", storeError(err))
	}
	for _, o := range gws {
		// The same id at the same address is this gateway restarted.
		if o.ID == rec.ID && o.Alive(now) && o.APIAddr != rec.APIAddr {
			return fmt.Errorf("gateway id %q is in use by a live gateway at %s (last heartbeat %s ago): give this gateway another --id",
				rec.ID, o.APIAddr, now.Sub(o.HeartbeatAt).Round(time.Second))
		}
	}
	if err := g.store.UpsertGateway(ctx, rec); err != nil {
		return fmt.Errorf("record this gateway in the store: %w", storeError(err))
	}
	return nil
}

// heartbeat records this gateway every HeartbeatInterval until ctx ends:
// one write per interval, whatever the number of agents and sessions.
func (g *Gateway) heartbeat(ctx context.Context) {
	t := time.NewTicker(g.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wctx, cancel := context.WithTimeout(ctx, g.cfg.HeartbeatInterval)
		err := g.store.UpsertGateway(wctx, g.advertised(g.cfg.Clock()))
		cancel()
		if err != nil && ctx.Err() == nil {
			g.cfg.Log.Warn("gateway heartbeat failed; it is retried at the next interval", "err", storeError(err))
		}
	}
}
