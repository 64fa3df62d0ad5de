package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/discovery"
)

// Gateways from DNS (--gateway srv:ZONE): the SRV records of the cluster's
// zone, which every gateway's DNS server publishes from the live
// gateways' heartbeats (pkg/discovery). The agent resolves them at start,
// keeps a connection to every gateway listed, follows changes at the
// records' TTL (a new gateway gets a connection, one that left loses its
// own), and, when DNS cannot be reached, goes on with the last list it
// knew, also across restarts (saved with the identity).

// resolveGateways sets the agent up for --gateway srv:ZONE (or an
// enrolled identity that says so): the first list from DNS, or the saved
// one when DNS does not answer, and the watcher that follows it.
func (a *Agent) resolveGateways(ctx context.Context, flag string) error {
	gw := flag
	if gw == "" {
		if id, err := a.store.load(); err == nil && id != nil {
			gw = id.Gateway
		}
	}
	zone, isSRV, err := discovery.ParseGateway(gw)
	if err != nil || !isSRV {
		return err
	}
	var saved []string
	if id, err := a.store.load(); err == nil && id != nil {
		saved = id.Gateways
	}
	w, err := discovery.Watch(ctx, discovery.WatchConfig{Zone: zone, Resolver: &discovery.Resolver{Server: a.cfg.DNSServer},
		Initial: saved, Log: a.log})
	if err != nil {
		return fmt.Errorf("--gateway %s: %w: check the zone's SRV records (_tunnel._udp.%s) and the DNS server (--dns-server, or this machine's resolvers)",
			gw, err, strings.TrimSuffix(zone, "."))
	}
	a.srvZone, a.watch = zone, w
	a.resolved = w.Gateways()
	a.log.Info("gateways from DNS", "zone", strings.TrimSuffix(zone, "."), "gateways", strings.Join(a.resolved, ","))
	return nil
}

// currentGateways is the list of gateways now, comma-separated.
func (a *Agent) currentGateways() string {
	var addrs []string
	for _, l := range a.gatewayLinks() {
		addrs = append(addrs, l.addr)
	}
	return strings.Join(addrs, ",")
}

// followGateways applies DNS's changes until ctx ends: a link (and its
// connection loop, started with start) per new gateway, and the end of
// the link of each gateway that left. The list is saved with the
// identity, for a start while DNS is down.
func (a *Agent) followGateways(ctx context.Context, start func(*link)) {
	defer a.watch.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case list := <-a.watch.Changes():
			a.setGateways(list, start)
		}
	}
}

// setGateways makes the links match list.
func (a *Agent) setGateways(list []string, start func(*link)) {
	a.gatewayLinks()
	a.linksMu.Lock()
	var kept []*link
	for _, l := range a.links {
		if slices.Contains(list, l.addr) {
			kept = append(kept, l)
			continue
		}
		a.log.Info("gateway left DNS; closing its connection", "gateway", l.addr)
		if l.stop != nil {
			l.stop()
		}
	}
	var added []*link
	for _, addr := range list {
		if !slices.ContainsFunc(kept, func(l *link) bool { return l.addr == addr }) {
			l := newLink(addr)
			kept = append(kept, l)
			added = append(added, l)
		}
	}
	// The list's order (DNS's priority and weight) decides which gateway
	// new streams go through first.
	slices.SortStableFunc(kept, func(x, y *link) int {
		return slices.Index(list, x.addr) - slices.Index(list, y.addr)
	})
	a.links = kept
	a.setOpenerLocked()
	a.linksMu.Unlock()
	for _, l := range added {
		a.log.Info("new gateway in DNS; connecting", "gateway", l.addr)
		start(l)
	}
	// Under idMu: a renewal or a trust bundle saved meanwhile would
	// otherwise be overwritten by this copy of the older identity.
	a.idMu.Lock()
	defer a.idMu.Unlock()
	if id := a.identity(); id != nil {
		cp := *id
		cp.Gateways = slices.Clone(list)
		if err := a.store.save(&cp); err != nil {
			a.log.Warn("cannot save the gateways DNS gave", "err", err)
		} else {
			a.mu.Lock()
			a.id = &cp
			a.mu.Unlock()
		}
	}
}
