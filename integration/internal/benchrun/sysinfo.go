package benchrun

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// sysInfo is the machine and versions part of the report.
type sysInfo struct {
	Date       string
	NProc      int
	GOMAXPROCS int
	CPUModel   string
	Kernel     string
	Versions   []string
	Sysctls    string
	// Load is the load average around the measurements: other work on the
	// machine lowers every number, so the ratios are what to read.
	Load string
}

// loadAverage is the 1, 5 and 15 minute load averages, "unknown" if
// unreadable.
func loadAverage() string {
	f := strings.Fields(readSmall("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func gatherSysInfo(ctx context.Context, tl tools, pg *pgtest.Server) sysInfo {
	si := sysInfo{
		Date:       time.Now().UTC().Format("2006-01-02"),
		NProc:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUModel:   "unknown CPU",
		Kernel:     strings.TrimSpace(readSmall("/proc/sys/kernel/osrelease")),
	}
	for _, l := range strings.Split(readSmall("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			si.CPUModel = strings.TrimSpace(v)
			break
		}
	}
	version := func(label string, re *regexp.Regexp, name string, args ...string) {
		if name == "" {
			return
		}
		out, _ := runOut(ctx, 10*time.Second, name, args...)
		v := "unknown"
		if m := re.FindStringSubmatch(out); m != nil {
			v = m[1]
		} else if l := strings.TrimSpace(firstLine(out)); l != "" {
			v = l
		}
		si.Versions = append(si.Versions, label+" "+v)
	}
	if out, err := runOut(ctx, 10*time.Second, "go", "version"); err == nil {
		si.Versions = append(si.Versions, strings.TrimPrefix(strings.TrimSpace(out), "go version "))
	} else {
		si.Versions = append(si.Versions, runtime.Version()+" (harness)")
	}
	version("iperf3", regexp.MustCompile(`iperf (\S+)`), tl.iperf3, "--version")
	version("stunnel", regexp.MustCompile(`stunnel (\S+)`), tl.stunnel, "-version")
	if tl.stunnel != "" {
		out, _ := runOut(ctx, 10*time.Second, tl.stunnel, "-version")
		if m := regexp.MustCompile(`Compiled with (OpenSSL \S+)`).FindStringSubmatch(out); m != nil {
			si.Versions[len(si.Versions)-1] += " (" + m[1] + ")"
		}
	}
	version("", regexp.MustCompile(`(OpenSSH_\S+)`), tl.ssh, "-V")
	if pg != nil {
		version("PostgreSQL", regexp.MustCompile(`\(PostgreSQL\) (\S+)`), filepath.Join(pg.BinDir, "postgres"), "--version")
	}
	for i, v := range si.Versions {
		si.Versions[i] = strings.TrimSpace(v)
	}
	var sc []string
	for _, k := range []string{"net.core.rmem_max", "net.core.wmem_max"} {
		v := strings.TrimSpace(readSmall("/proc/sys/" + strings.ReplaceAll(k, ".", "/")))
		if v == "" {
			v = "?"
		}
		sc = append(sc, k+" = "+v)
	}
	si.Sysctls = strings.Join(sc, ", ")
	return si
}

func readSmall(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
