// Package benchrun is the data-path benchmark harness behind
// `go run ./integration/cmd/tunnel-bench` (and `make bench`): it runs
// direct, stunnel, `ssh -L` and our tunnel side by side, interleaved
// round-robin within each repetition, and writes the results to
// docs/BENCHMARKS.md between the markers
// <!-- tunnel-bench:start --> and <!-- tunnel-bench:end -->.
//
// Two topologies (--topology): loopback (the default: every process in the
// harness's network namespace, over lo with its 64 KiB MTU), and netns:
// the server side (the targets, stunnel's server instance, sshd, the db
// agent), the client side (the load generators, stunnel's client instance,
// ssh -L, the app agent) and the tunnel's gateway each in a network
// namespace of its own, on one bridge through veth links of MTU 1500, so
// every path crosses a real Ethernet-sized link and TCP does not get
// loopback's 64 KiB segments. netns results go between
// <!-- tunnel-bench-netns:start --> and <!-- tunnel-bench-netns:end -->.
//
// Per path and repetition it measures bulk throughput (iperf3, 1 and 4
// streams), 64-byte round-trip latency (p50/p99) and new connection + first
// byte (p50) against an echo server inside the harness, `pgbench -S` TPS
// against a throwaway PostgreSQL, and the CPU seconds the path's forwarding
// processes spent per GB and per transaction (utime+stime from /proc).
package benchrun

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/netns"
	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// Config is what the flags set.
type Config struct {
	Paths        []string
	PathsDefault bool // --paths not given: a missing tunnel is skipped, not an error
	Reps         int
	Quick        bool
	Out          string // "" = do not write a file
	Topology     string // TopologyLoopback or TopologyNetns
	MTU          int    // of the netns topology's links

	IperfTime    time.Duration
	PgbenchTime  time.Duration
	PgbenchScale int
	RTTCount     int
	ConnectCount int

	TunnelBin        string // prebuilt tunnel binaries; "" = go build
	TunnelGWArgs     []string
	TunnelAgentArgs  []string
	CommandLine      string
	repoRoot         string
	tunnelSkipReason string
	builtTunnel      string // the tunnel binaries built for this run, shared by the tunnel paths
}

func parseFlags(args []string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("tunnel-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tunnel-bench [flags]\n\n"+
			"Runs direct, stunnel, ssh -L and the tunnel side by side, on loopback or (--topology netns)\n"+
			"between network namespaces joined by veth links of MTU 1500, and writes the results into\n"+
			"docs/BENCHMARKS.md between <!-- tunnel-bench:start/end --> markers\n"+
			"(netns: <!-- tunnel-bench-netns:start/end -->).\n\nflags:\n")
		fs.PrintDefaults()
	}
	topo := fs.String("topology", TopologyLoopback, "where the paths run: loopback (every process in this network namespace, over lo) or netns (server side, client side and gateway in three network namespaces joined by veth links and a bridge; needs root)")
	mtu := fs.Int("mtu", netns.DefaultMTU, "MTU of the netns topology's veth links and bridge")
	paths := fs.String("paths", strings.Join(allPaths, ","), "comma-separated paths to run: "+strings.Join(allPaths, ","))
	reps := fs.Int("reps", 3, "repetitions (the report shows the median over them)")
	quick := fs.Bool("quick", false, "smoke run: 1 repetition, short durations, small counts")
	out := fs.String("out", "", `Markdown file to update (default docs/BENCHMARKS.md at the module root; "-" writes none)`)
	iperfTime := fs.Duration("iperf-time", 5*time.Second, "iperf3 -t per bulk test")
	pgTime := fs.Duration("pgbench-time", 10*time.Second, "pgbench -T per run")
	pgScale := fs.Int("pgbench-scale", 10, "pgbench -i -s (once, direct)")
	rttN := fs.Int("rtt-count", 2000, "64-byte round trips per measurement")
	connN := fs.Int("connect-count", 300, "new connections + first byte per measurement")
	tunnelBin := fs.String("tunnel-bin", "", "directory with prebuilt tunnel-gateway, tunnel-agent, tunnel (default: go build them)")
	gwArgs := fs.String("tunnel-gateway-args", "", "extra arguments for `tunnel-gateway run` (space-separated)")
	agentArgs := fs.String("tunnel-agent-args", "", "extra arguments for `tunnel-agent run` (space-separated)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c := &Config{
		Reps: *reps, Quick: *quick, Out: *out, Topology: *topo, MTU: *mtu,
		IperfTime: *iperfTime, PgbenchTime: *pgTime, PgbenchScale: *pgScale,
		RTTCount: *rttN, ConnectCount: *connN,
		TunnelBin: *tunnelBin, TunnelGWArgs: strings.Fields(*gwArgs), TunnelAgentArgs: strings.Fields(*agentArgs),
		PathsDefault: !set["paths"],
	}
	if c.Quick {
		quickDefaults := []struct {
			name string
			f    func()
		}{
			{"reps", func() { c.Reps = 1 }},
			{"iperf-time", func() { c.IperfTime = 2 * time.Second }},
			{"pgbench-time", func() { c.PgbenchTime = 3 * time.Second }},
			{"pgbench-scale", func() { c.PgbenchScale = 2 }},
			{"rtt-count", func() { c.RTTCount = 300 }},
			{"connect-count", func() { c.ConnectCount = 50 }},
		}
		for _, q := range quickDefaults {
			if !set[q.name] {
				q.f()
			}
		}
	}
	for _, p := range strings.Split(*paths, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allPaths, p) {
			return nil, fmt.Errorf("--paths: unknown path %q (want some of %s)", p, strings.Join(allPaths, ","))
		}
		if !slices.Contains(c.Paths, p) {
			c.Paths = append(c.Paths, p)
		}
	}
	switch {
	case !slices.Contains(allTopologies, c.Topology):
		return nil, fmt.Errorf("--topology: unknown topology %q (want %s)", c.Topology, strings.Join(allTopologies, " or "))
	case c.Topology != TopologyNetns && set["mtu"]:
		return nil, errors.New("--mtu applies to --topology netns only")
	case c.MTU < 576 || c.MTU > 65535:
		return nil, errors.New("--mtu: want 576..65535")
	case len(c.Paths) == 0:
		return nil, errors.New("--paths: no path")
	case c.Reps < 1 || c.Reps > 100:
		return nil, errors.New("--reps: want 1..100")
	case c.IperfTime < time.Second || c.PgbenchTime < time.Second:
		return nil, errors.New("--iperf-time and --pgbench-time: want at least 1s")
	case c.RTTCount < 10 || c.ConnectCount < 10:
		return nil, errors.New("--rtt-count and --connect-count: want at least 10")
	case c.PgbenchScale < 1:
		return nil, errors.New("--pgbench-scale: want at least 1")
	}
	c.CommandLine = "go run ./integration/cmd/tunnel-bench"
	for _, a := range args {
		c.CommandLine += " " + shellQuote(a)
	}
	return c, nil
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=,:@+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tools are the external programs the harness runs.
type tools struct {
	iperf3, stunnel, ssh string
}

// Run parses args, runs the benchmark and writes the report. Every process
// it starts is stopped and waited for before it returns, also when ctx is
// cancelled (SIGINT).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	root, err := repoRoot(ctx)
	if err != nil {
		return err
	}
	cfg.repoRoot = root
	switch cfg.Out {
	case "":
		cfg.Out = filepath.Join(root, "docs", "BENCHMARKS.md")
	case "-":
		cfg.Out = ""
	}

	tmp, err := os.MkdirTemp("", "tunnel-bench-")
	if err != nil {
		return err
	}
	// World-searchable: sshd's session processes and the postgres user
	// (pgtest) must reach files below it.
	_ = os.Chmod(tmp, 0o755)
	e := &env{tmp: tmp, log: stderr}
	e.addCleanup("temp dir", func() { _ = os.RemoveAll(tmp) })
	defer e.cleanup()

	topo, err := newTopology(ctx, e, cfg)
	if err != nil {
		if hint := notPermittedHint(err); hint != err {
			return hint
		}
		return fmt.Errorf("--topology %s: %w", cfg.Topology, err)
	}

	var tl tools
	need := map[string]*string{"iperf3": &tl.iperf3}
	if slices.Contains(cfg.Paths, PathStunnel) {
		need["stunnel"] = &tl.stunnel
	}
	if slices.Contains(cfg.Paths, PathSSH) {
		need["ssh"] = &tl.ssh
	}
	for name, dst := range need {
		p, err := testenv.FindProgram(name)
		if err != nil {
			if name == "stunnel" {
				if p, err = testenv.FindProgram("stunnel4"); err == nil {
					*dst = p
					continue
				}
			}
			return fmt.Errorf("%s not found (%s)", name, testenv.InstallHint)
		}
		*dst = p
	}

	// Targets.
	e.logf("starting targets: iperf3 -s, echo server, PostgreSQL")
	iperfPort, _, err := startIperfServer(e, topo, tl.iperf3)
	if err != nil {
		return err
	}
	echo, err := startEcho(e, topo)
	if err != nil {
		return err
	}
	pg, err := startPostgres(e, topo)
	if err != nil {
		return err
	}
	e.logf("pgbench -i -s %d", cfg.PgbenchScale)
	if err := pgbenchInit(ctx, topo.server, pg, cfg.PgbenchScale); err != nil {
		return err
	}
	// Addr is where the server side's own processes reach a target (its
	// loopback), Remote where the client side does (the same on loopback).
	targets := []Target{
		{TargetIperf, loopback(iperfPort), topo.server.addr(iperfPort)},
		{TargetEcho, loopback(echo.Port()), topo.server.addr(echo.Port())},
		{TargetPostgres, pg.Addr, topo.server.addr(pg.Port)},
	}

	// Paths.
	var paths []Path
	addrs := map[string]map[string]string{}
	for _, name := range cfg.Paths {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p, err := makePath(ctx, e, cfg, topo, tl, name)
		if err == nil {
			e.logf("setting up %s", name)
			var a map[string]string
			a, err = p.Setup(ctx, targets)
			if err == nil {
				err = verifyPath(ctx, topo, tl, pg, a)
			}
			e.addCleanup("path "+name, func() { _ = p.Close() })
			if err == nil {
				addrs[name] = a
				paths = append(paths, p)
				continue
			}
			_ = p.Close()
			err = fmt.Errorf("setting up path %s: %w", name, err)
		}
		if isTunnel(name) && cfg.PathsDefault && ctx.Err() == nil {
			cfg.tunnelSkipReason = firstLine(err.Error())
			if r := []rune(cfg.tunnelSkipReason); len(r) > 300 {
				cfg.tunnelSkipReason = string(r[:300]) + " …"
			}
			e.logf("SKIPPING the tunnel path: %v", err)
			continue
		}
		return err
	}

	res := newResults()
	loadBefore := loadAverage()
	var linksBefore linkTraffic
	linksOK := false
	if topo.isNetns() {
		if linksBefore, err = topo.linkSnapshot(ctx); err != nil {
			e.logf("reading the links' byte counters: %v", err)
		} else {
			linksOK = true
		}
	}
	for rep := 0; rep < cfg.Reps; rep++ {
		order := rotate(paths, rep)
		names := make([]string, len(order))
		for i, p := range order {
			names[i] = p.Name()
		}
		e.logf("repetition %d/%d, order %s", rep+1, cfg.Reps, strings.Join(names, ", "))
		if err := runRepetition(ctx, e, cfg, topo.client, tl, pg, order, addrs, res); err != nil {
			return err
		}
	}

	if linksOK {
		if after, err := topo.linkSnapshot(ctx); err != nil {
			e.logf("reading the links' byte counters: %v", err)
		} else {
			topo.traffic = after.since(linksBefore)
			e.logf("bytes through the gateway's link: %d in, %d out; the client's link: %d in, %d out",
				topo.traffic.gwRx, topo.traffic.gwTx, topo.traffic.cliRx, topo.traffic.cliTx)
		}
	}

	info := gatherSysInfo(ctx, tl, pg)
	info.Load = fmt.Sprintf("%s at the start of the measurements, %s at the end", loadBefore, loadAverage())
	report := buildReport(cfg, topo, info, paths, res)
	fmt.Fprint(stdout, report)
	if cfg.Out != "" {
		start, end := markersFor(cfg.Topology)
		if err := writeSectionBetween(cfg.Out, start, end, report); err != nil {
			return err
		}
		e.logf("wrote %s", cfg.Out)
	}
	if n := res.errorCount(); n > 0 {
		return fmt.Errorf("%d measurements failed (see the log and the report)", n)
	}
	return nil
}

func makePath(ctx context.Context, e *env, cfg *Config, topo *topology, tl tools, name string) (Path, error) {
	switch name {
	case PathDirect:
		return directPath{}, nil
	case PathStunnel:
		return newStunnelPath(e, topo, tl.stunnel), nil
	case PathSSH:
		return newSSHPath(e, topo, tl.ssh), nil
	case PathTunnel, PathTunnelDirectTCP, PathTunnelRelayed, PathTunnelTCP:
		dir := cfg.TunnelBin
		if dir != "" {
			if err := checkTunnelBin(dir); err != nil {
				return nil, err
			}
		} else if cfg.builtTunnel != "" {
			dir = cfg.builtTunnel
		} else {
			e.logf("building tunnel-gateway, tunnel-agent, tunnel")
			var err error
			if dir, err = buildTunnel(ctx, e, cfg.repoRoot); err != nil {
				return nil, fmt.Errorf("tunnel binaries: %w", err)
			}
			cfg.builtTunnel = dir
		}
		return newTunnelPath(e, topo, dir, name, cfg.TunnelGWArgs, cfg.TunnelAgentArgs), nil
	}
	return nil, fmt.Errorf("unknown path %q", name)
}

// verifyPath checks a first round trip to every target through a path,
// from the client side: one byte through the echo server, SELECT 1 through
// PostgreSQL, and a 1 KB iperf3 test.
func verifyPath(ctx context.Context, topo *topology, tl tools, pg *pgtest.Server, addrs map[string]string) error {
	for _, t := range []string{TargetEcho, TargetPostgres, TargetIperf} {
		a, ok := addrs[t]
		if !ok {
			return fmt.Errorf("no address for target %s", t)
		}
		if err := topo.checkAddr(a); err != nil {
			return err
		}
	}
	client := topo.client
	if err := waitFor(ctx, 30*time.Second, nil, func() error {
		_, err := firstByte(ctx, client, addrs[TargetEcho])
		return err
	}); err != nil {
		return fmt.Errorf("echo first byte: %w", err)
	}
	if err := waitFor(ctx, 30*time.Second, nil, func() error {
		var out string
		err := client.do(func() (err error) {
			out, err = pg.TryPSQL(addrs[TargetPostgres], "SELECT 1")
			return err
		})
		if err == nil && out != "1" {
			err = fmt.Errorf("SELECT 1 returned %q", out)
		}
		return err
	}); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	// One second of bulk, not a byte count: a count small enough to fit
	// in the socket buffers ends the test before a forwarder that opens
	// its channel per connection (ssh -L) delivered any of it, and iperf3
	// then reports nothing received.
	if _, err := runIperf(ctx, client, tl.iperf3, addrs[TargetIperf], 1, time.Second, ""); err != nil {
		return err
	}
	return nil
}

// runRepetition runs every metric for every path, metric by metric, paths
// in the given order, the load generators on client.
func runRepetition(ctx context.Context, e *env, cfg *Config, client *host, tl tools, pg *pgtest.Server,
	order []Path, addrs map[string]map[string]string, res *results) error {
	for _, streams := range []int{1, 4} {
		mBW, mCPU := metricBulk1, metricCPUGB1
		if streams == 4 {
			mBW, mCPU = metricBulk4, metricCPUGB4
		}
		for _, p := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var r iperfResult
			cpu, ok, err := cpuMeter(p, func() (err error) {
				r, err = runIperf(ctx, client, tl.iperf3, addrs[p.Name()][TargetIperf], streams, cfg.IperfTime, "")
				return err
			})
			if err != nil {
				res.fail(mBW, p.Name(), err, e)
				continue
			}
			res.add(mBW, p.Name(), r.BitsPerSecond/1e9)
			if ok && r.Bytes > 0 {
				res.add(mCPU, p.Name(), cpu/(r.Bytes/1e9))
			}
			e.logf("  %-7s iperf3 -P %d: %.2f Gbit/s, tunnel CPU %.2f s", p.Name(), streams, r.BitsPerSecond/1e9, cpu)
		}
	}
	for _, p := range order {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ds, err := rtt64(ctx, client, addrs[p.Name()][TargetEcho], cfg.RTTCount)
		if err != nil {
			res.fail(metricRTT50, p.Name(), err, e)
			continue
		}
		res.add(metricRTT50, p.Name(), micros(percentile(ds, 50)))
		res.add(metricRTT99, p.Name(), micros(percentile(ds, 99)))
		e.logf("  %-7s 64 B RTT: p50 %v p99 %v", p.Name(), percentile(ds, 50), percentile(ds, 99))
	}
	for _, p := range order {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ds, err := connectFirstByte(ctx, client, addrs[p.Name()][TargetEcho], cfg.ConnectCount)
		if err != nil {
			res.fail(metricConn50, p.Name(), err, e)
			continue
		}
		res.add(metricConn50, p.Name(), micros(percentile(ds, 50)))
		e.logf("  %-7s connect+first byte: p50 %v", p.Name(), percentile(ds, 50))
	}
	for _, p := range order {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var r pgbenchResult
		cpu, ok, err := cpuMeter(p, func() (err error) {
			r, err = pgbenchSelect(ctx, client, pg, addrs[p.Name()][TargetPostgres], 8, 2, cfg.PgbenchTime)
			return err
		})
		if err != nil {
			res.fail(metricTPS, p.Name(), err, e)
			continue
		}
		res.add(metricTPS, p.Name(), r.TPS)
		if ok && r.Transactions > 0 {
			res.add(metricCPUTx, p.Name(), cpu/r.Transactions*1e6)
		}
		e.logf("  %-7s pgbench -S: %.0f tps, tunnel CPU %.2f s", p.Name(), r.TPS, cpu)
	}
	return nil
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func rotate(ps []Path, n int) []Path {
	if len(ps) == 0 {
		return nil
	}
	n %= len(ps)
	return append(slices.Clone(ps[n:]), ps[:n]...)
}

// repoRoot is the directory of the main module's go.mod (`go env GOMOD`),
// falling back to the nearest go.mod above the working directory.
func repoRoot(ctx context.Context) (string, error) {
	if out, err := runOut(ctx, time.Minute, "go", "env", "GOMOD"); err == nil {
		if p := strings.TrimSpace(out); p != "" && p != os.DevNull {
			return filepath.Dir(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("cannot find the module root (go env GOMOD); run from inside the repository")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// median of the finite values in vs, NaN if none.
func median(vs []float64) float64 {
	s := slices.DeleteFunc(slices.Clone(vs), func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) })
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
