package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/agent"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// The units in deploy/systemd name the binaries where an operator installs
// them; the tests point them at the binaries TestMain built.
const unitBinDir = "/usr/local/bin/"

// unitsUnderTest copies deploy/systemd's units into a directory of their
// own, with ExecStart pointing at the built binaries, and returns their
// paths.
func unitsUnderTest(t *testing.T, edit func(name, text string) string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, name := range []string{"tunnel-gateway.service", "tunnel-agent.service"} {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if !strings.Contains(text, "ExecStart="+unitBinDir) {
			t.Fatalf("%s: ExecStart does not start with %s; the test (and docs/OPERATOR.md) expect the binaries there", name, unitBinDir)
		}
		text = strings.ReplaceAll(text, unitBinDir, binDir+"/")
		if edit != nil {
			text = edit(name, text)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// verifyUnits runs systemd-analyze verify and returns what it printed.
func verifyUnits(t *testing.T, analyze string, paths []string) (string, error) {
	t.Helper()
	cmd := exec.Command(analyze, append([]string{"verify", "--no-pager"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestSystemdUnitsVerify checks both units with systemd-analyze verify:
// any warning (an unknown or misspelt directive, a bad value, a missing
// binary) fails the test.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd-analyze")
	paths := unitsUnderTest(t, nil)
	out, err := verifyUnits(t, analyze, paths)
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// And with the drop-in for VMs whose logins administer the machine.
	dropDir := filepath.Join(filepath.Dir(paths[1]), "tunnel-agent.service.d")
	dropIn, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", "tunnel-agent-full-logins.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dropDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropDir, "full-logins.conf"), dropIn, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = verifyUnits(t, analyze, paths[1:])
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify with tunnel-agent-full-logins.conf: %v\n%s", err, out)
	}

	// And the gateway with its readiness drop-in.
	gwDropDir := filepath.Join(filepath.Dir(paths[0]), "tunnel-gateway.service.d")
	readyConf, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", "tunnel-gateway-ready.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(gwDropDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gwDropDir, "ready.conf"), readyConf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = verifyUnits(t, analyze, paths[:1])
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify with tunnel-gateway-ready.conf: %v\n%s", err, out)
	}

	// The agent's example configuration the unit points at is valid.
	if _, err := agent.LoadConfig(filepath.Join("..", "deploy", "systemd", "agent.yaml")); err != nil {
		t.Errorf("deploy/systemd/agent.yaml: %v", err)
	}

	// The check can fail: a misspelt directive is only a warning for
	// systemd, and still fails here.
	bad := unitsUnderTest(t, func(_, text string) string {
		return strings.Replace(text, "NoNewPrivileges=yes", "NoNewPrivilege=yes", 1)
	})
	out, _ = verifyUnits(t, analyze, bad)
	if !strings.Contains(out, "Unknown key 'NoNewPrivilege'") {
		t.Fatalf("systemd-analyze verify on a misspelt directive printed %q; want the warning that the test relies on", out)
	}
}

// TestSystemdUnitsHardened checks the sandbox each unit promises, and that
// systemd's own exposure score stays low.
func TestSystemdUnitsHardened(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd-analyze")
	want := map[string][]string{
		"tunnel-gateway.service": {
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
			"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
			"DynamicUser=yes", "StateDirectory=tunnel-gateway", "LimitNOFILE=", "Restart=on-failure",
			"run --config /etc/tunnel/gateway.yaml",
		},
		"tunnel-agent.service": {
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
			"PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
			"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
			"CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_KILL CAP_NET_BIND_SERVICE",
			"User=root", "StateDirectory=tunnel-agent", "LimitNOFILE=", "Restart=on-failure",
			"run --config /etc/tunnel/agent.yaml",
		},
	}
	// The highest exposure systemd-analyze security may report (0 is the
	// tightest, 10 the loosest); the agent needs root and setuid for logins.
	maxExposure := map[string]float64{"tunnel-gateway.service": 2.5, "tunnel-agent.service": 4.0}
	scoreRE := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, p := range unitsUnderTest(t, nil) {
		name := filepath.Base(p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for _, w := range want[name] {
			found := false
			for _, l := range lines {
				if !strings.HasPrefix(l, "#") && strings.Contains(l, w) {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("%s: no line with %q", name, w)
			}
		}
		cmd := exec.Command(analyze, "security", "--offline=yes", "--no-pager", p)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_COLORS=0")
		out, err := cmd.CombinedOutput()
		m := scoreRE.FindSubmatch(out)
		if m == nil {
			t.Errorf("systemd-analyze security %s: %v; no exposure level in:\n%s", name, err, out)
			continue
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		if score > maxExposure[name] {
			t.Errorf("%s: exposure level %.1f, want at most %.1f (a protection was loosened?)\n%s", name, score, maxExposure[name], out)
		}
	}
}

// TestSystemdReadyProbe runs the readiness probe of
// tunnel-gateway-ready.conf, as systemd would after the start, against a
// real gateway with the metrics address of deploy/systemd/gateway.yaml
// (moved to a free port): it succeeds once the gateway is ready.
func TestSystemdReadyProbe(t *testing.T) {
	testenv.LookPath(t, "curl")
	b, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", "tunnel-gateway-ready.conf"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const addr = "127.0.0.1:9090"
	if !strings.Contains(string(cfg), "\nmetrics-addr: "+addr+"\n") {
		t.Fatalf("deploy/systemd/gateway.yaml has no metrics-addr: %s, which the drop-in probes", addr)
	}
	var probe string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStartPost=/bin/sh -c "); ok {
			probe = v
		}
	}
	if !strings.Contains(probe, "http://"+addr+"/readyz") {
		t.Fatalf("the drop-in's ExecStartPost %q does not probe http://%s/readyz", probe, addr)
	}
	// systemd's quoting and $$ escapes, undone.
	probe = strings.ReplaceAll(strings.Trim(probe, "'"), "$$", "$")
	port := freeLoopbackPort(t)
	c := startCluster(t, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port))
	probe = strings.ReplaceAll(probe, addr, c.metricsAddr())
	cmd := exec.Command("/bin/sh", "-c", probe)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the readiness probe failed against a ready gateway: %v\n%s", err, out)
	}
}
