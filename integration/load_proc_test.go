package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadStats is what /proc and the debug listener say about a process.
type loadStats struct {
	rss, hwm   uint64 // bytes: VmRSS and VmHWM (peak)
	threads    int
	goroutines int // -1 when not known
}

var goroutineTotalRE = regexp.MustCompile(`^goroutine profile: total (\d+)`)

var debugLineRE = regexp.MustCompile(`Debug profiles \(pprof\) on (http://\S+/debug/pprof/)`)

// loadDebugURL returns the gateway's debug listener's URL (--debug-addr),
// which it prints just after the line cluster.start waits for; "" (and an
// error) if it does not within 10 s.
func loadDebugURL(t *testing.T, c *cluster) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := debugLineRE.FindStringSubmatch(c.log.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Errorf("the gateway did not print its debug address (--debug-addr) within 10s")
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadGatewayStats reads the gateway's RSS and threads from /proc and its
// goroutines from its debug listener (--debug-addr).
func loadGatewayStats(t *testing.T, c *cluster) loadStats {
	t.Helper()
	st := loadProcStatus(t, c.cmd.Process.Pid)
	st.goroutines = -1
	debug := loadDebugURL(t, c)
	if debug == "" {
		return st
	}
	resp, err := http.Get(debug + "goroutine?debug=1")
	if err != nil {
		t.Errorf("goroutine profile: %v", err)
		return st
	}
	defer resp.Body.Close()
	head, _ := bufio.NewReader(resp.Body).ReadString('\n')
	g := goroutineTotalRE.FindStringSubmatch(head)
	if g == nil {
		t.Errorf("goroutine profile starts with %q; want \"goroutine profile: total N\"", head)
		return st
	}
	st.goroutines, _ = strconv.Atoi(g[1])
	return st
}

// loadProcStatus reads VmRSS, VmHWM and Threads of process pid.
func loadProcStatus(t *testing.T, pid int) loadStats {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the status of process %d: %v", pid, err)
	}
	var st loadStats
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var x uint64
		fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &x)
		switch k {
		case "VmRSS":
			st.rss = x << 10
		case "VmHWM":
			st.hwm = x << 10
		case "Threads":
			st.threads = int(x)
		}
	}
	return st
}

// loadProcLimits returns process pid's open-file limit as /proc shows it.
func loadProcLimits(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return err.Error()
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "Max open files") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return "open-file limit unknown"
}

// loadMachine describes the machine: CPUs, memory, Go.
func loadMachine() string {
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		mem = strings.Join(strings.Fields(line)[1:], " ")
	}
	return fmt.Sprintf("%d CPUs, MemTotal %s, %s", runtime.NumCPU(), mem, runtime.Version())
}

func loadMiB(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// loadProfile, when LOAD_PROFILE names a directory, saves a 20 s CPU
// profile of the gateway from now (the reconnection after a restart) to
// DIR/gateway-restart-{term,kill}.pprof, and its goroutines 1, 2, 4 and 8 s
// from now to DIR/gateway-restart-{term,kill}-goroutines-Ns.txt; the
// function it returns waits for them. Read the profile with go tool pprof
// -top BINARY FILE.
func loadProfile(t *testing.T, c *cluster, shards []*exec.Cmd, kill bool) func() {
	t.Helper()
	dir := os.Getenv("LOAD_PROFILE")
	if dir == "" {
		return func() {}
	}
	debug := loadDebugURL(t, c)
	if debug == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("LOAD_PROFILE: %v", err)
		return func() {}
	}
	base := filepath.Join(dir, "gateway-restart-term")
	if kill {
		base = filepath.Join(dir, "gateway-restart-kill")
	}
	save := func(url, name string) error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		return os.WriteFile(name, b, 0o644)
	}
	// The shards profile themselves from one SIGUSR1 to the next
	// (loadagents --profile), over the gateway's 20 s.
	signalShards := func() {
		for _, p := range shards {
			_ = p.Process.Signal(syscall.SIGUSR1)
		}
	}
	signalShards()
	done := make(chan error, 2)
	go func() {
		err := save(debug+"profile?seconds=20", base+".pprof")
		signalShards()
		done <- err
	}()
	go func() {
		start := time.Now()
		var err error
		for _, s := range []int{1, 2, 4, 8} {
			time.Sleep(time.Until(start.Add(time.Duration(s) * time.Second)))
			err = errors.Join(err, save(debug+"goroutine?debug=1", fmt.Sprintf("%s-goroutines-%ds.txt", base, s)))
		}
		done <- err
	}()
	return func() {
		if err := errors.Join(<-done, <-done); err != nil {
			t.Errorf("profiles of the gateway: %v", err)
			return
		}
		t.Logf("load: CPU profile of the gateway's first 20 s after the restart: %s.pprof (binary %s); goroutines: %s-goroutines-*.txt; the agents' shards over the same 20 s: %s/agents-shard-*-N.pprof (N counts the restarts)", base, bin("tunnel-gateway"), base, dir)
	}
}

// loadProcCPU returns the user and system CPU time process pid used.
func loadProcCPU(pid int) time.Duration {
	f := loadProcStat(pid)
	if len(f) < 13 {
		return 0
	}
	return loadTicks(f[11]) + loadTicks(f[12])
}

// loadGroupCPU returns the CPU time of process pgid (a postmaster) and its
// children (its backends, which are in their own sessions), with the
// children it waited for (backends that ended).
func loadGroupCPU(pgid int) time.Duration {
	var total time.Duration
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := loadProcStat(pid)
		if len(f) < 15 || pid != pgid && f[1] != strconv.Itoa(pgid) {
			continue
		}
		total += loadTicks(f[11]) + loadTicks(f[12])
		if pid == pgid {
			total += loadTicks(f[13]) + loadTicks(f[14])
		}
	}
	return total
}

// loadSelfCPU returns this process's user and system CPU time.
func loadSelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadProcStat returns the fields of /proc/PID/stat after the command
// name: f[0] is the state, f[1] the parent, f[11] to f[14] utime,
// stime, cutime and cstime in clock ticks.
func loadProcStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// loadTicks converts clock ticks (USER_HZ, 100 on Linux) to a duration.
func loadTicks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * 10 * time.Millisecond
}
