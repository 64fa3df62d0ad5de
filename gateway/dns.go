package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/tunnelhq/tunnel/gateway/internal/dnsserver"
)

// The gateway's DNS server (--dns-addr, --dns-zone): authoritative for
// the cluster's zone only, it publishes the live gateways (SRV
// _tunnel._udp.ZONE and _tunnel._tcp.ZONE, A/AAAA of gw-ID.ZONE) from the
// store's heartbeats, so that agents and clients find every gateway with
// --gateway srv:ZONE; see gateway/internal/dnsserver.

// checkDNS checks the DNS flags before anything starts.
func (c *Config) checkDNS() error {
	if c.DNSAddr == "" {
		if c.DNSZone != "" || len(c.DNSNodes) > 0 {
			return errors.New("--dns-zone and --dns-node need --dns-addr (where the gateway answers DNS)")
		}
		return nil
	}
	if strings.Trim(c.DNSZone, ".") == "" {
		return errors.New("--dns-addr needs --dns-zone: the zone the gateway answers for, e.g. prod.tunnel.example.com")
	}
	if _, _, err := net.SplitHostPort(c.DNSAddr); err != nil {
		return fmt.Errorf("--dns-addr %q: %w (use HOST:PORT, e.g. :53 or 10.0.0.5:5353)", c.DNSAddr, err)
	}
	for _, n := range c.DNSNodes {
		if _, err := dnsserver.ParseNode(n); err != nil {
			return fmt.Errorf("--dns-node %q: %w", n, err)
		}
	}
	return nil
}

// dnsState is the running DNS server, nil when off.
type dnsState struct {
	srv  *dnsserver.Server
	udp  net.PacketConn
	tcp  net.Listener
	wg   sync.WaitGroup
	errc chan error
}

// listenDNS binds the DNS sockets and serves them in the background.
func (g *Gateway) listenDNS() error {
	if g.cfg.DNSAddr == "" {
		return nil
	}
	var nodes []dnsserver.Node
	for _, n := range g.cfg.DNSNodes {
		node, _ := dnsserver.ParseNode(n) // checked by checkDNS
		nodes = append(nodes, node)
	}
	udp, err := net.ListenPacket("udp", g.cfg.DNSAddr)
	if err != nil {
		return listenError("--dns-addr", "UDP", g.cfg.DNSAddr, err)
	}
	// TCP on the port UDP got (an ephemeral :0 in tests).
	tcpAddr := udp.LocalAddr().String()
	tcp, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		udp.Close()
		return listenError("--dns-addr", "TCP", tcpAddr, err)
	}
	d := &dnsState{udp: udp, tcp: tcp, errc: make(chan error, 1), srv: &dnsserver.Server{
		Zone:   g.cfg.DNSZone,
		Source: &dnsserver.StoreSource{Store: g.store, Clock: g.cfg.Clock, Published: nodes},
		Log:    g.cfg.Log.With("component", "dns"),
		Clock:  g.cfg.Clock,
	}}
	g.dns = d
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := d.srv.Serve(udp, tcp)
		if err != nil && !errors.Is(err, dnsserver.ErrServerClosed) {
			g.cfg.Log.Error("DNS server stopped", "err", err)
		}
	}()
	return nil
}

// DNSAddr is the DNS server's address (UDP and TCP share the port), nil
// when it is off.
func (g *Gateway) DNSAddr() net.Addr {
	if g.dns == nil {
		return nil
	}
	return g.dns.udp.LocalAddr()
}

// closeDNS stops the DNS server and waits for it. Safe to call twice.
func (g *Gateway) closeDNS(ctx context.Context) {
	if g.dns == nil {
		return
	}
	_ = g.dns.srv.Shutdown(ctx)
	g.dns.wg.Wait()
}
