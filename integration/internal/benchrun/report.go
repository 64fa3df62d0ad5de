package benchrun

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"
)

// Metric keys.
const (
	metricBulk1  = "bulk1"
	metricBulk4  = "bulk4"
	metricRTT50  = "rtt50"
	metricRTT99  = "rtt99"
	metricConn50 = "conn50"
	metricTPS    = "tps"
	metricCPUGB1 = "cpugb1"
	metricCPUGB4 = "cpugb4"
	metricCPUTx  = "cputx"
)

// metric describes one table of the report.
type metric struct {
	key, title, unit string
	higherBetter     bool
	cpu              bool // tunnel-process CPU: "-" for direct, no ratio vs direct
	digits           int
}

var metrics = []metric{
	{metricBulk1, "Bulk throughput, 1 stream (`iperf3 -P 1`)", "Gbit/s", true, false, 2},
	{metricBulk4, "Bulk throughput, 4 streams (`iperf3 -P 4`)", "Gbit/s", true, false, 2},
	{metricRTT50, "64-byte round trip, p50 (one connection)", "µs", false, false, 0},
	{metricRTT99, "64-byte round trip, p99 (one connection)", "µs", false, false, 0},
	{metricConn50, "New connection + first byte, p50", "µs", false, false, 0},
	{metricTPS, "`pgbench -S -c 8 -j 2`", "TPS", true, false, 0},
	{metricCPUGB1, "CPU of the forwarding processes per GB, 1 stream", "CPU s/GB", false, true, 2},
	{metricCPUGB4, "CPU of the forwarding processes per GB, 4 streams", "CPU s/GB", false, true, 2},
	{metricCPUTx, "CPU of the forwarding processes per `pgbench -S` transaction", "CPU µs/tx", false, true, 1},
}

// results holds every measurement: metric → path → one value per repetition.
type results struct {
	mu     sync.Mutex
	vals   map[string]map[string][]float64
	errs   map[string]map[string][]string
	nerror int
}

func newResults() *results {
	return &results{vals: map[string]map[string][]float64{}, errs: map[string]map[string][]string{}}
}

func (r *results) add(m, path string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.vals[m] == nil {
		r.vals[m] = map[string][]float64{}
	}
	r.vals[m][path] = append(r.vals[m][path], v)
}

func (r *results) fail(m, path string, err error, e *env) {
	e.logf("  %-7s %s FAILED: %v", path, m, err)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errs[m] == nil {
		r.errs[m] = map[string][]string{}
	}
	r.errs[m][path] = append(r.errs[m][path], firstLine(err.Error()))
	r.nerror++
}

func (r *results) errorCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nerror
}

// med returns the median over repetitions of metric m for path, NaN if none.
func (r *results) med(m, path string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return median(r.vals[m][path])
}

func (r *results) runs(m, path string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.vals[m][path]...)
}

func fmtNum(v float64, digits int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	s := fmt.Sprintf("%.*f", digits, v)
	if digits == 0 && math.Abs(v) >= 1000 {
		// 1234 → 1,234
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		s = b.String()
		if neg {
			s = "-" + s
		}
	}
	return s
}

func ratio(v, ref float64) float64 {
	if math.IsNaN(v) || math.IsNaN(ref) || ref == 0 {
		return math.NaN()
	}
	return v / ref
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.2f×", x)
}

// aim is one of issue 3's aims for the tunnel against stunnel.
type aim struct {
	what    string
	metric  string
	goal    float64 // the direct path's bound (issue 9)
	atLeast bool    // tunnel/stunnel must be >= bound (else <=)
	// relayed: the aim also applies to the relayed path, with relayedGoal.
	relayed     bool
	relayedGoal float64
}

var aims = []aim{
	{"new connection + first byte p50 at most 0.5× stunnel's", metricConn50, 0.5, false, false, 0},
	{"`pgbench -S` TPS at least 1.0× stunnel's (relayed: 0.6×)", metricTPS, 1.0, true, true, 0.6},
	{"bulk, 1 stream, at least 1.0× stunnel's (relayed: 0.5×)", metricBulk1, 1.0, true, true, 0.5},
	{"bulk, 4 streams, at least 1.0× stunnel's (relayed: 0.5×)", metricBulk4, 1.0, true, true, 0.5},
	{"CPU per GB (1 stream) at most 2× stunnel's", metricCPUGB1, 2.0, false, false, 0},
	{"CPU per GB (4 streams) at most 2× stunnel's", metricCPUGB4, 2.0, false, false, 0},
}

// buildReport renders the Markdown section (without the markers).
func buildReport(cfg *Config, topo *topology, info sysInfo, paths []Path, res *results) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	names := make([]string, len(paths))
	has := map[string]bool{}
	for i, p := range paths {
		names[i] = p.Name()
		has[p.Name()] = true
	}

	if topo.isNetns() {
		w("## Data path between network namespaces, veth MTU %d: %s (%s)\n\n", topo.mtu, strings.Join(labelsShort(names), ", "), info.Date)
	} else {
		w("## Data path: %s (%s)\n\n", strings.Join(labelsShort(names), ", "), info.Date)
	}
	w("```sh\n%s\n```\n\n", cfg.CommandLine)
	w("- Machine: %d cores (`nproc`), %s; Linux %s; GOMAXPROCS %d (harness)\n", info.NProc, info.CPUModel, info.Kernel, info.GOMAXPROCS)
	if info.Load != "" {
		w("- Load average (1, 5, 15 min): %s\n", info.Load)
	}
	w("- Versions: %s\n", strings.Join(info.Versions, "; "))
	w("- UDP/socket buffers: %s\n", info.Sysctls)
	w("- %s\n", topologyLine(topo))
	label := pathLabel
	if tr := topo.traffic; tr != nil {
		w("- Bytes on the gateway's link during the measurements: %s in, %s out; on the client's link (every path): %s in, %s out (the relayed tunnel paths cross the gateway's link, the direct one does not).\n",
			fmtBytes(tr.gwRx), fmtBytes(tr.gwTx), fmtBytes(tr.cliRx), fmtBytes(tr.cliTx))
	}
	w("- %d repetition(s); in each, every metric runs for every path, "+
		"interleaved round-robin (path order rotated per repetition); tables show the median over repetitions, "+
		"the \"runs\" column each repetition's value.\n", cfg.Reps)
	w("- Bulk: `iperf3 -c ... -t %d -P 1|4 -J`, `end.sum_received.bits_per_second`. "+
		"Latency: the harness's Go echo server, %d round trips of 64 bytes on one connection; "+
		"%d × (dial, write 1 byte, read it back, close). "+
		"`pgbench -i -s %d` once, then `pgbench -S -n -c 8 -j 2 -T %d` per path.\n",
		int(cfg.IperfTime/time.Second), cfg.RTTCount, cfg.ConnectCount, cfg.PgbenchScale, int(cfg.PgbenchTime/time.Second))
	w("- CPU: utime+stime from `/proc/PID/stat` of all the path's forwarding processes, summed, " +
		"around each run (stunnel: client and server instances; ssh -L: the ssh client and the sshd " +
		"session processes; tunnel: gateway and both agents). Direct has none (\"-\").\n")
	w("- Paths: direct (client → target); stunnel (client → stunnel client mode → TLS 1.3, mutual auth, " +
		"ECDSA P-256 → stunnel server mode → target); ssh -L (client → ssh → sshd → target; Ed25519 key, " +
		"default cipher negotiation); tunnel direct (client → app agent → QUIC, mutual TLS → db agent → target, decided by the gateway); " +
		"tunnel relayed (`direct: off`: client → app agent → gateway → db agent → target); " +
		"tunnel over TCP (`--quic-over-tcp`: the relayed path with QUIC carried in TLS over TCP).\n")
	if cfg.tunnelSkipReason != "" {
		w("- **The tunnel path was skipped**: %s\n", cfg.tunnelSkipReason)
	}
	if cfg.Quick {
		w("- **`--quick` smoke run**: short durations and counts; not comparable numbers.\n")
	}
	w("\n")

	for _, m := range metrics {
		w("### %s (%s; %s is better)\n\n", m.title, m.unit, map[bool]string{true: "higher", false: "lower"}[m.higherBetter])
		w("| path | %s | vs direct | vs stunnel | runs |\n|---|---:|---:|---:|---|\n", m.unit)
		direct := res.med(m.key, PathDirect)
		stun := res.med(m.key, PathStunnel)
		for _, n := range names {
			v := res.med(m.key, n)
			val := fmtNum(v, m.digits)
			if m.cpu && n == PathDirect {
				val = "-"
			}
			if isTunnel(n) && !math.IsNaN(v) {
				val = "**" + val + "**"
			}
			vsDirect := "-"
			if !m.cpu && n != PathDirect && has[PathDirect] {
				vsDirect = fmtRatio(ratio(v, direct))
			}
			vsStunnel := "-"
			if n != PathStunnel && has[PathStunnel] && !(m.cpu && n == PathDirect) {
				vsStunnel = fmtRatio(ratio(v, stun))
			}
			var runs []string
			for _, r := range res.runs(m.key, n) {
				runs = append(runs, fmtNum(r, m.digits))
			}
			if es := res.errs[m.key][n]; len(es) > 0 {
				runs = append(runs, fmt.Sprintf("%d failed: %s", len(es), strings.ReplaceAll(es[0], "|", "/")))
			}
			runsStr := strings.Join(runs, ", ")
			if m.cpu && n == PathDirect {
				runsStr = ""
			}
			w("| %s | %s | %s | %s | %s |\n", label(n), val, vsDirect, vsStunnel, runsStr)
		}
		w("\n")
	}

	for _, tp := range []struct{ name, title string }{
		{PathTunnel, "the direct path"}, {PathTunnelDirectTCP, "the direct path over TCP+TLS"}, {PathTunnelRelayed, "the relayed path"}} {
		if !has[tp.name] {
			continue
		}
		w("### Aims: %s against stunnel, same run\n\n", tp.title)
		w("| aim | tunnel / stunnel | |\n|---|---:|---|\n")
		for _, a := range aims {
			if tp.name == PathTunnelRelayed && !a.relayed {
				continue
			}
			x := ratio(res.med(a.metric, tp.name), res.med(a.metric, PathStunnel))
			verdict := "not measured"
			if !math.IsNaN(x) {
				if tp.name == PathTunnelRelayed {
					verdict = passFail(x, a.relayedGoal, a.atLeast)
				} else {
					verdict = passFail(x, a.goal, a.atLeast)
				}
			}
			w("| %s | %s | %s |\n", a.what, fmtRatio(x), verdict)
		}
		w("\n")
	}
	if !has[PathStunnel] {
		w("\nThe aims need the stunnel path in the run.\n")
	}
	return b.String()
}

// topologyLine is the report's sentence on where everything ran and the
// MTU of the links between them.
func topologyLine(t *topology) string {
	mtu := "MTU unknown"
	if t.mtu > 0 {
		mtu = fmt.Sprintf("MTU %d", t.mtu)
	}
	if !t.isNetns() {
		return fmt.Sprintf("Topology: **loopback** (`--topology loopback`): every process in one network namespace, over `lo` (%s).", mtu)
	}
	return fmt.Sprintf("Topology: **netns** (`--topology netns`): three network namespaces on one Linux bridge "+
		"(in a fourth namespace), each joined to it by a veth pair; every veth and the bridge have %s "+
		"(checked with `ip -n NS link show` before the run), so TCP's MSS is %d bytes instead of loopback's ~65 KB; "+
		"the veths keep their default segmentation offload (TCP and UDP GSO packets of up to 64 KiB cross them whole, "+
		"as with a NIC doing TSO/GRO). "+
		"Server side %s: iperf3 -s, the echo server, PostgreSQL, stunnel's server instance, sshd, the db agent "+
		"(they reach the targets over the namespace's own loopback). "+
		"Client side %s: iperf3 -c, pgbench, the latency client, stunnel's client instance, ssh -L, the app agent "+
		"(the clients connect to the forwarders on the namespace's loopback; direct connects to %s). "+
		"Gateway %s: tunnel-gateway and the admin CLI. "+
		"So direct, stunnel and ssh -L cross the link once (client → server), the tunnel twice when the gateway relays it "+
		"(app agent → gateway → db agent) and once when it goes directly between the agents, as between three machines on one switch.",
		mtu, t.mtu-52, t.server.ip, t.client.ip, t.server.ip, t.gateway.ip)
}

// fmtBytes is n in MB (10^6) with one decimal.
func fmtBytes(n uint64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func passFail(x, bound float64, atLeast bool) string {
	ok := x <= bound
	if atLeast {
		ok = x >= bound
	}
	if ok {
		return fmt.Sprintf("pass (%s %.1f×)", map[bool]string{true: "≥", false: "≤"}[atLeast], bound)
	}
	return fmt.Sprintf("**fail** (want %s %.1f×)", map[bool]string{true: "≥", false: "≤"}[atLeast], bound)
}

func labelsShort(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		if n == PathSSH {
			out[i] = "ssh -L"
		} else {
			out[i] = n
		}
	}
	return out
}

// Section markers in docs/BENCHMARKS.md: the loopback topology's, and the
// netns topology's (a run of one does not replace the other's numbers).
const (
	markerStart      = "<!-- tunnel-bench:start -->"
	markerEnd        = "<!-- tunnel-bench:end -->"
	markerNetnsStart = "<!-- tunnel-bench-netns:start -->"
	markerNetnsEnd   = "<!-- tunnel-bench-netns:end -->"
)

// markersFor returns the section markers of a topology.
func markersFor(topology string) (start, end string) {
	if topology == TopologyNetns {
		return markerNetnsStart, markerNetnsEnd
	}
	return markerStart, markerEnd
}

// writeSection replaces what is between the markers in path with section,
// appending the markers at the end if they are absent (creating the file if
// it does not exist). The rest of the file is left as it is.
func writeSection(path, section string) error {
	return writeSectionBetween(path, markerStart, markerEnd, section)
}

// writeSectionBetween is writeSection with the given markers.
func writeSectionBetween(path, markerStart, markerEnd, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	block := markerStart + "\n" + strings.TrimRight(section, "\n") + "\n" + markerEnd
	i := strings.Index(s, markerStart)
	j := strings.Index(s, markerEnd)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(markerEnd):]
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s: only one of the markers %s / %s, or in the wrong order; fix the file by hand", path, markerStart, markerEnd)
	default:
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		if s != "" {
			s += "\n"
		}
		s += block + "\n"
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
