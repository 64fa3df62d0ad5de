package benchrun

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Target is a server the paths forward to: the iperf3 server, the echo
// server, PostgreSQL.
type Target struct {
	Name   string // "iperf", "echo", "postgres"
	Addr   string // 127.0.0.1:PORT, as the server side reaches it (forwarders deliver here)
	Remote string // as the client side reaches it (direct): Addr on loopback, SERVER-IP:PORT on netns
}

// Target names.
const (
	TargetIperf    = "iperf"
	TargetEcho     = "echo"
	TargetPostgres = "postgres"
)

// Path is one way for a client to reach the targets: straight, or through a
// forwarder (stunnel, ssh -L, our tunnel).
type Path interface {
	// Name is the path's name in flags and tables.
	Name() string
	// Setup starts whatever forwards to targets and returns, per target
	// name, the address a client on the topology's client side connects to
	// (its loopback, or the server's address for direct). It returns once
	// every forwarder accepts connections (the caller checks a first round
	// trip).
	Setup(ctx context.Context, targets []Target) (map[string]string, error)
	// PIDs are the processes whose CPU time counts as the path's cost (all
	// forwarding processes, summed); none for direct.
	PIDs() []int
	// Close stops the path's processes and waits for them.
	Close() error
}

// Path names, in the default order.
const (
	PathDirect  = "direct"
	PathStunnel = "stunnel"
	PathSSH     = "ssh"
	PathTunnel  = "tunnel"
	// PathTunnelRelayed is the tunnel with `direct: off` in both agents:
	// every byte through the gateway.
	PathTunnelRelayed = "tunnel-relayed"
	// PathTunnelTCP is the tunnel with both agents on QUIC over TCP
	// (tunnel-agent --quic-over-tcp), relayed.
	PathTunnelTCP = "tunnel-tcp"
	// PathTunnelDirectTCP is the direct path with its TCP transport: each
	// stream on a TCP connection of its own with mutual TLS 1.3 between
	// the agents (PathTunnel runs the direct path on QUIC only).
	PathTunnelDirectTCP = "tunnel-direct-tcp"
)

var allPaths = []string{PathDirect, PathStunnel, PathSSH, PathTunnel, PathTunnelDirectTCP, PathTunnelRelayed, PathTunnelTCP}

// isTunnel reports whether name is one of the tunnel's paths.
func isTunnel(name string) bool {
	return name == PathTunnel || name == PathTunnelRelayed || name == PathTunnelTCP || name == PathTunnelDirectTCP
}

// pathLabel is a path's name in the report.
func pathLabel(name string) string {
	switch name {
	case PathSSH:
		return "ssh -L"
	case PathTunnel:
		return "tunnel direct (app agent → db agent)"
	case PathTunnelDirectTCP:
		return "tunnel direct over TCP+TLS (app agent → db agent)"
	case PathTunnelRelayed:
		return "tunnel relayed (app agent → gateway → db agent)"
	case PathTunnelTCP:
		return "tunnel over TCP (relayed, QUIC in TLS over TCP)"
	}
	return name
}

// directPath connects straight to the targets.
type directPath struct{}

func (directPath) Name() string { return PathDirect }
func (directPath) Setup(_ context.Context, targets []Target) (map[string]string, error) {
	m := map[string]string{}
	for _, t := range targets {
		m[t.Name] = t.Remote
	}
	return m, nil
}
func (directPath) PIDs() []int  { return nil }
func (directPath) Close() error { return nil }

// acceptsTCP reports whether addr accepts a TCP connection from h.
func acceptsTCP(ctx context.Context, h *host, addr string) error {
	if h.ns != nil {
		ctx2, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := h.dial(ctx2, addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// checkLoopback refuses any address outside 127.0.0.0/8.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return fmt.Errorf("%s is not a 127.0.0.0/8 address", addr)
	}
	return nil
}
