package benchrun

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	clkTckOnce sync.Once
	clkTck     = 100.0
)

// clockTicks returns sysconf(_SC_CLK_TCK) (via getconf; 100 on Linux).
func clockTicks() float64 {
	clkTckOnce.Do(func() {
		out, err := runOut(context.Background(), 5*time.Second, "getconf", "CLK_TCK")
		if err != nil {
			return
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(out), 64); err == nil && v > 0 {
			clkTck = v
		}
	})
	return clkTck
}

// cpuSample is the user+system CPU time, in clock ticks, of a set of
// processes (all their threads) at one moment.
type cpuSample map[int]uint64

// sampleCPU reads utime+stime (fields 14 and 15 of /proc/PID/stat) of pids.
// Processes that are gone are left out.
func sampleCPU(pids []int) cpuSample {
	s := cpuSample{}
	for _, pid := range pids {
		f, err := procStat(pid)
		// f[0] is field 3 (state), so utime (14) is f[11], stime (15) f[12].
		if err != nil || len(f) < 13 {
			continue
		}
		u, err1 := strconv.ParseUint(f[11], 10, 64)
		st, err2 := strconv.ParseUint(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		s[pid] = u + st
	}
	return s
}

// cpuSeconds returns the CPU seconds the processes spent between before and
// after, summed. A process that appeared in between counts from zero; one
// that vanished counts nothing for the interval.
func cpuSeconds(before, after cpuSample) float64 {
	var ticks uint64
	for pid, a := range after {
		b := before[pid]
		if a > b {
			ticks += a - b
		}
	}
	return float64(ticks) / clockTicks()
}

// cpuMeter measures the CPU seconds a path's processes spend during f. For a
// path with no processes (direct) it returns ok=false.
func cpuMeter(p Path, f func() error) (seconds float64, ok bool, err error) {
	pids := p.PIDs()
	before := sampleCPU(pids)
	err = f()
	// PIDs again: a path may have forked a process during f.
	after := sampleCPU(append(pids, p.PIDs()...))
	if len(pids) == 0 {
		return 0, false, err
	}
	return cpuSeconds(before, after), true, err
}
