package benchrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/netns"
)

// Topologies (--topology).
const (
	TopologyLoopback = "loopback"
	TopologyNetns    = "netns"
)

var allTopologies = []string{TopologyLoopback, TopologyNetns}

// netnsSubnet is the LAN of the netns topology. The namespaces are
// isolated from the machine's own network, so a fixed private prefix cannot
// clash with anything, not even with another run's.
var netnsSubnet = netip.MustParsePrefix("10.99.0.0/24")

// host is a machine of the topology: where a process runs, where a socket
// is opened. In the loopback topology every host is the harness's own
// network namespace and ip is 127.0.0.1; in the netns topology each host is
// a network namespace on the LAN.
type host struct {
	label string
	ns    *netns.NS // nil: the harness's own namespace
	ip    string    // the address other hosts reach it at
}

// do runs f so that the sockets it opens and the processes it starts are
// in h's namespace.
func (h *host) do(f func() error) error {
	if h.ns == nil {
		return f()
	}
	return h.ns.Do(f)
}

// start starts cmd on h.
func (h *host) start(cmd *exec.Cmd) error { return h.do(cmd.Start) }

// output runs cmd on h and returns its stdout (combined: stdout and
// stderr), like cmd.Output (cmd.CombinedOutput).
func (h *host) output(cmd *exec.Cmd, combined bool) ([]byte, error) {
	if h.ns == nil {
		if combined {
			return cmd.CombinedOutput()
		}
		return cmd.Output()
	}
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if combined {
		cmd.Stderr = &out
	}
	if err := h.start(cmd); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	var xe *exec.ExitError
	if !combined && errors.As(err, &xe) {
		xe.Stderr = errb.Bytes()
	}
	return out.Bytes(), err
}

// dial connects to addr from h.
func (h *host) dial(ctx context.Context, addr string) (net.Conn, error) {
	if h.ns == nil {
		d := net.Dialer{Timeout: 10 * time.Second}
		return d.DialContext(ctx, "tcp", addr)
	}
	return h.ns.Dial(ctx, "tcp", addr)
}

// freePort returns a TCP port on h's 127.0.0.1 that was free a moment ago
// (in the netns topology also free on h's LAN address: nothing else runs
// there).
func (h *host) freePort() (int, error) {
	var p int
	err := h.do(func() (err error) {
		p, err = freePort()
		return err
	})
	return p, err
}

// addr is h's ip with port.
func (h *host) addr(port int) string { return net.JoinHostPort(h.ip, strconv.Itoa(port)) }

// topology is where the client side (iperf3 -c, pgbench, the harness's
// latency client, stunnel's client instance, ssh -L, the app agent), the
// server side (the targets and whatever delivers to them: iperf3 -s, the
// echo server, PostgreSQL, stunnel's server instance, sshd, the db agent)
// and the tunnel's gateway run.
type topology struct {
	name                    string
	mtu                     int // of the links between hosts
	client, server, gateway *host
	lan                     *netns.LAN // netns only

	// traffic is what crossed the gateway's and the client's links during
	// the measurements (netns only; nil if not measured).
	traffic *linkTraffic
}

// linkTraffic is the bytes on the gateway's and the client's links over
// the repetitions. Only the tunnel path can use the gateway's link, so it
// shows whether the tunnel's streams were relayed by the gateway or went
// directly between the agents.
type linkTraffic struct {
	gwRx, gwTx, cliRx, cliTx uint64
}

// linkSnapshot reads the counters of the gateway's and client's links.
func (t *topology) linkSnapshot(ctx context.Context) (linkTraffic, error) {
	var s linkTraffic
	if !t.isNetns() {
		return s, errors.New("not a netns topology")
	}
	var err error
	if s.gwRx, s.gwTx, err = t.gateway.ns.LinkBytes(ctx, netns.HostIface); err != nil {
		return s, err
	}
	s.cliRx, s.cliTx, err = t.client.ns.LinkBytes(ctx, netns.HostIface)
	return s, err
}

// since returns the bytes counted from before to s.
func (s linkTraffic) since(before linkTraffic) *linkTraffic {
	return &linkTraffic{s.gwRx - before.gwRx, s.gwTx - before.gwTx, s.cliRx - before.cliRx, s.cliTx - before.cliTx}
}

func (t *topology) isNetns() bool { return t.name == TopologyNetns }

// localHost is the harness's own namespace over loopback.
func localHost(label string) *host { return &host{label: label, ip: "127.0.0.1"} }

// newTopology sets up cfg.Topology. For netns it creates the LAN (and
// registers its removal with e before anything else can fail) and
// verifies the MTU of every host's link with `ip -n NS link show`.
func newTopology(ctx context.Context, e *env, cfg *Config) (*topology, error) {
	if cfg.Topology != TopologyNetns {
		t := &topology{name: TopologyLoopback, client: localHost("client"), server: localHost("server"), gateway: localHost("gateway")}
		t.mtu, _ = strconv.Atoi(strings.TrimSpace(readSmall("/sys/class/net/lo/mtu")))
		return t, nil
	}
	if deleted, err := netns.CleanStale(); err != nil {
		e.logf("removing namespaces of earlier runs: %v", err)
	} else if len(deleted) > 0 {
		e.logf("removed namespaces an earlier, killed run left behind: %s", strings.Join(deleted, ", "))
	}
	e.logf("creating network namespaces: gateway, server, client on a bridge, veth MTU %d", cfg.MTU)
	lan, err := netns.NewLAN(ctx, netns.Prefix("bench"), netnsSubnet, cfg.MTU, "gw", "srv", "cli")
	if err != nil {
		return nil, err
	}
	e.addCleanup("network namespaces", func() {
		if err := lan.Close(); err != nil {
			e.logf("removing the network namespaces: %v", err)
		}
	})
	hostOf := func(label, role string) *host {
		h := lan.Host(label)
		return &host{label: role, ns: h.NS, ip: h.Addr.String()}
	}
	t := &topology{name: TopologyNetns, mtu: lan.MTU, lan: lan,
		gateway: hostOf("gw", "gateway"), server: hostOf("srv", "server"), client: hostOf("cli", "client")}
	for _, h := range lan.Hosts {
		mtu, err := h.MTU(ctx, h.Iface)
		if err != nil {
			return nil, err
		}
		if mtu != cfg.MTU {
			return nil, fmt.Errorf("%s: %s has MTU %d, want %d", h.Name, h.Iface, mtu, cfg.MTU)
		}
	}
	e.logf("namespaces: %s", t.describeHosts())
	return t, nil
}

// describeHosts is "gateway tn-bench-1-gw 10.99.0.1, ..." for the log.
func (t *topology) describeHosts() string {
	var parts []string
	for _, h := range []*host{t.gateway, t.server, t.client} {
		name := "(own namespace)"
		if h.ns != nil {
			name = h.ns.Name
		}
		parts = append(parts, fmt.Sprintf("%s %s %s", h.label, name, h.ip))
	}
	return strings.Join(parts, ", ")
}

// checkAddr refuses a client address outside the topology: anything but
// 127.0.0.0/8 on loopback; anything but 127.0.0.0/8 or the LAN on netns.
func (t *topology) checkAddr(addr string) error {
	if err := checkLoopback(addr); err == nil || !t.isNetns() {
		return err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !netnsSubnet.Contains(a) {
		return fmt.Errorf("%s is neither a 127.0.0.0/8 address nor on the benchmark's LAN %s", addr, netnsSubnet)
	}
	return nil
}

// notPermittedHint turns netns.ErrNotPermitted/ErrNoIP into the one line
// the user reads.
func notPermittedHint(err error) error {
	switch {
	case errors.Is(err, netns.ErrNotPermitted):
		detail := strings.TrimSpace(strings.TrimPrefix(err.Error(), netns.ErrNotPermitted.Error()))
		return fmt.Errorf("--topology netns cannot create network namespaces, which needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN (euid %d; %s): run it as root (sudo -E go run ./integration/cmd/tunnel-bench --topology netns) or use --topology loopback",
			os.Geteuid(), strings.Trim(detail, "()"))
	case errors.Is(err, netns.ErrNoIP):
		return errors.New("--topology netns needs the `ip` command (iproute2), which was not found: install it (Debian: apt-get install iproute2) or use --topology loopback")
	}
	return err
}
