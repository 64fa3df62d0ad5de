package integration

// docker-compose.yml is checked twice, since no Docker engine runs here:
// TestComposeFile loads and validates it with compose-go (the library
// docker compose itself uses) and checks the topology it promises;
// TestComposeTopology starts the same services as processes on loopback,
// with exactly the commands, environment, files and order the loaded
// project gives them, and runs the client's psql and pgbench through the
// app agent.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/pquerna/otp/totp"

	"github.com/tunnelhq/tunnel/agent"
	"github.com/tunnelhq/tunnel/integration/internal/mariadbtest"
	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// repoRoot is the module's root (the tests run in integration/).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// loadCompose loads a compose file the way docker compose does: schema
// validation, interpolation (with an empty environment, so the test does
// not depend on the caller's), merge keys, consistency of references.
func loadCompose(t testing.TB, root, file string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(root), cli.WithEnv([]string{}), cli.WithConsistency(true), cli.WithResolvedPaths(true))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return cli.ProjectFromOptions(ctx, opts)
}

func mustLoadCompose(t testing.TB) *types.Project {
	t.Helper()
	root := repoRoot(t)
	p, err := loadCompose(t, root, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

// nsOf is the service whose network namespace s runs in (network_mode:
// service:X shares X's, as the client shares the app agent's 127.0.0.1).
func nsOf(s types.ServiceConfig) string {
	if x, ok := strings.CutPrefix(s.NetworkMode, "service:"); ok {
		return x
	}
	return s.Name
}

func envOf(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

func TestComposeFile(t *testing.T) {
	root := repoRoot(t)
	p := mustLoadCompose(t)

	wantServices := []string{"app-agent", "client", "db-agent", "db-mariadb", "db-postgres", "enrol", "gateway-a", "gateway-b", "init", "store"}
	if got := p.ServiceNames(); !slices.Equal(sortedCopy(got), wantServices) {
		t.Fatalf("services = %v, want %v", sortedCopy(got), wantServices)
	}
	wantVolumes := []string{"app-agent-data", "cluster-secrets", "db-agent-data", "db-mariadb-data", "db-postgres-data", "enrolment", "gateway-a-data", "gateway-b-data", "store-data"}
	var vols []string
	for name := range p.Volumes {
		vols = append(vols, name)
	}
	if sort.Strings(vols); !slices.Equal(vols, wantVolumes) {
		t.Errorf("volumes = %v, want %v", vols, wantVolumes)
	}
	for _, name := range []string{"store", "gateway-a", "gateway-b", "db-agent", "db-postgres", "db-mariadb", "app-agent"} {
		hc := p.Services[name].HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 {
			t.Errorf("%s: no healthcheck", name)
		}
	}
	// Data lives in named volumes, never in a container's own layer.
	for name, dir := range map[string]string{"store": "/var/lib/postgresql/data", "gateway-a": "/var/lib/tunnel",
		"gateway-b": "/var/lib/tunnel", "db-agent": "/var/lib/tunnel-agent", "app-agent": "/var/lib/tunnel-agent",
		"db-postgres": "/var/lib/postgresql/data", "db-mariadb": "/var/lib/mysql"} {
		if v := mountAt(p.Services[name], dir); v == nil || v.Type != types.VolumeTypeVolume {
			t.Errorf("%s: no named volume at %s", name, dir)
		}
	}

	// The gateways: one store, one KEK, one config file, the same image.
	for _, name := range []string{"gateway-a", "gateway-b"} {
		s := p.Services[name]
		cmd := strings.Join(s.Command, " ")
		if !strings.HasPrefix(cmd, "tunnel-gateway run --config /etc/tunnel/gateway.yaml") {
			t.Errorf("%s: command %q, want tunnel-gateway run --config /etc/tunnel/gateway.yaml ...", name, cmd)
		}
		if envOf(s, "TUNNEL_GATEWAY_KEK_FILE") != "/var/lib/tunnel-cluster/kek" || envOf(s, "TUNNEL_GATEWAY_STORE_FILE") != "/run/secrets/store-url" {
			t.Errorf("%s: environment %v, want the KEK and the store URL as files", name, s.Environment)
		}
		if v := mountAt(s, "/var/lib/tunnel-cluster"); v == nil || v.Source != "cluster-secrets" || !v.ReadOnly {
			t.Errorf("%s: the KEK's volume cluster-secrets is not mounted read-only at /var/lib/tunnel-cluster", name)
		}
		if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Target != "tunnel" || s.Build.Context != root {
			t.Errorf("%s: build %+v, want deploy/Dockerfile's tunnel stage from the repository", name, s.Build)
		}
		for dep, cond := range map[string]string{"store": types.ServiceConditionHealthy, "init": types.ServiceConditionCompletedSuccessfully} {
			if d, ok := s.DependsOn[dep]; !ok || d.Condition != cond {
				t.Errorf("%s: depends_on %s: %+v, want %s", name, dep, d, cond)
			}
		}
		// Healthy means ready: /readyz on the metrics address of the
		// shared configuration file.
		if hc := s.HealthCheck; hc == nil || !strings.HasSuffix(strings.Join(hc.Test, " "), "http://127.0.0.1:9090/readyz") {
			t.Errorf("%s: healthcheck %v, want a probe of http://127.0.0.1:9090/readyz", name, s.HealthCheck)
		}
	}
	if cfg := readTrim(t, p.Configs["gateway"].File); !strings.Contains(cfg, "\nmetrics-addr: :9090") {
		t.Errorf("deploy/compose/gateway.yaml: no metrics-addr: :9090 for the gateways' /readyz healthcheck")
	}
	// The agents: both gateways, their YAML, a join token from a file.
	for name, node := range map[string]string{"db-agent": "db-1", "app-agent": "app-1"} {
		cmd := strings.Join(p.Services[name].Command, " ")
		for _, want := range []string{"exec tunnel-agent run ", "--gateway gateway-a:8443,gateway-b:8443", "--config /etc/tunnel/agent.yaml",
			"--token-file /var/lib/tunnel-enrolment/tokens/" + node, `--ca-pin "$(cat /var/lib/tunnel-enrolment/ca-pin)"`} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s: command %q lacks %q", name, cmd, want)
			}
		}
	}
	for _, name := range []string{"db-postgres", "db-mariadb"} {
		if s := p.Services[name]; s.NetworkMode != "service:db-agent" {
			t.Errorf("%s: network_mode %q, want service:db-agent (the database VM)", name, s.NetworkMode)
		}
	}
	c := p.Services["client"]
	script := strings.Join(append(slices.Clone(c.Entrypoint), c.Command...), " ")
	if c.NetworkMode != "service:app-agent" || envOf(c, "PGHOST") != "127.0.0.1" ||
		!strings.Contains(script, "psql ") || !strings.Contains(script, "pgbench -c") {
		t.Errorf("client: network_mode %q, PGHOST %q, script %q; want psql and pgbench through the app agent's 127.0.0.1",
			c.NetworkMode, envOf(c, "PGHOST"), script)
	}

	// The store's URL and its password agree.
	pw := readTrim(t, p.Secrets["store-password"].File)
	url := readTrim(t, p.Secrets["store-url"].File)
	if !strings.Contains(url, "://tunnel:"+pw+"@store:5432/tunnel") || envOf(p.Services["store"], "POSTGRES_USER") != "tunnel" {
		t.Errorf("secret store-url %q does not match the store's user tunnel and password", url)
	}
	// The agents' files are valid agent configurations.
	for _, name := range []string{"db-agent", "app-agent"} {
		if _, err := agent.LoadConfig(p.Configs[name].File); err != nil {
			t.Errorf("config %s: %v", name, err)
		}
	}
	// The image: the three binaries, the bootstrap script where the
	// commands expect it, an unprivileged user.
	df := readTrim(t, filepath.Join(root, "deploy", "Dockerfile"))
	for _, want := range []string{"AS build", "AS tunnel", "./gateway/cmd/tunnel-gateway ./agent/cmd/tunnel-agent ./client/cmd/tunnel",
		"deploy/compose/bootstrap.sh /usr/local/bin/tunnel-compose-bootstrap", "\nUSER tunnel\n", "GOPROXY=https://proxy.golang.org"} {
		if !strings.Contains(df, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}

	// The check can fail: a misspelt key is refused by the schema.
	bad := filepath.Join(t.TempDir(), "docker-compose.yml")
	text := strings.Replace(readTrim(t, filepath.Join(root, "docker-compose.yml")), "    healthcheck:", "    healthchek:", 1)
	if err := os.WriteFile(bad, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCompose(t, root, bad); err == nil || !strings.Contains(err.Error(), "healthchek") {
		t.Errorf("a compose file with healthchek: loaded (%v); want a schema error naming it", err)
	}
}

// TestComposeBootstrapTOTP checks the bootstrap script's TOTP (openssl and
// awk) against the library the gateway uses.
func TestComposeBootstrapTOTP(t *testing.T) {
	testenv.LookPath(t, "openssl")
	script := filepath.Join(repoRoot(t), "deploy", "compose", "bootstrap.sh")
	for _, secret := range []string{"JBSWY3DPEHPK3PXP", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ"} {
		for attempt := 0; ; attempt++ {
			before := time.Now()
			out, err := exec.Command("sh", script, "totp", secret).CombinedOutput()
			if err != nil {
				t.Fatalf("bootstrap.sh totp: %v\n%s", err, out)
			}
			after := time.Now()
			if before.Unix()/30 != after.Unix()/30 && attempt < 3 {
				continue // a step boundary passed: which code is right is unclear
			}
			want, err := totp.GenerateCode(secret, before)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); got != want {
				t.Fatalf("bootstrap.sh totp %s = %q, want %q", secret, got, want)
			}
			break
		}
	}
}

// composeRun runs the services of a compose project as processes.
//
// Each network namespace (a service, with those that share it through
// network_mode) gets a loopback address of its own, which stands for both
// the service's host name and its 127.0.0.1. The only rewriting is the one
// a container's network and file system do: host names and 127.0.0.1 become
// that address, a port a stand-in server listens on becomes its address,
// ":PORT" binds that address, and a container path becomes the host
// directory of its volume (or the file of its secret or config).
type composeRun struct {
	t        *testing.T
	p        *types.Project
	dir      string
	ips      map[string]string // namespace -> loopback address
	backends map[string]string // "ns:port" -> address of the stand-in server
	volumes  map[string]string // named volume -> host directory
	path     string            // PATH: the built binaries, the bootstrap script, the PostgreSQL tools
	procs    []*composeProc
}

type composeProc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

var (
	hostPortRE = regexp.MustCompile(`([A-Za-z0-9_.-]*):([0-9]{1,5})\b`)
	ncRE       = regexp.MustCompile(`\bnc -z ([A-Za-z0-9_.-]+) ([0-9]{1,5})\b`)
)

// rewrite maps s, as seen inside service svc, to the host.
func (r *composeRun) rewrite(svc types.ServiceConfig, s string) string {
	ns := nsOf(svc)
	if s == "127.0.0.1" || s == "localhost" {
		return r.ips[ns]
	}
	s = r.rewritePaths(svc, s)
	// nc takes its address as two arguments: HOST PORT.
	s = replaceAllSubmatchFunc(ncRE, s, func(m []int) string {
		host, port, _ := net.SplitHostPort(r.rewrite(svc, s[m[2]:m[3]]+":"+s[m[4]:m[5]]))
		return "nc -z " + host + " " + port
	})
	return replaceAllSubmatchFunc(hostPortRE, s, func(m []int) string {
		host, port := s[m[2]:m[3]], s[m[4]:m[5]]
		target := ""
		switch {
		case host == "127.0.0.1" || host == "localhost":
			target = ns
		case host == "":
			if m[0] == 0 || strings.ContainsRune(" =\t", rune(s[m[0]-1])) {
				target = ns
			}
		default:
			if other, ok := r.p.Services[host]; ok {
				target = nsOf(other)
			}
		}
		if target == "" {
			return s[m[0]:m[1]]
		}
		if a, ok := r.backends[target+":"+port]; ok {
			return a
		}
		return net.JoinHostPort(r.ips[target], port)
	})
}

func replaceAllSubmatchFunc(re *regexp.Regexp, s string, f func(m []int) string) string {
	var b strings.Builder
	last := 0
	for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
		b.WriteString(s[last:m[0]])
		b.WriteString(f(m))
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// mounts maps svc's container paths to host paths: volumes, secrets and
// configs (whose files are written with their contents rewritten).
func (r *composeRun) mounts(svc types.ServiceConfig) map[string]string {
	t := r.t
	m := map[string]string{}
	for _, v := range svc.Volumes {
		if v.Type != types.VolumeTypeVolume {
			t.Fatalf("%s: volume %s is a %s; the test maps named volumes only", svc.Name, v.Target, v.Type)
		}
		d, ok := r.volumes[v.Source]
		if !ok {
			d = filepath.Join(r.dir, "volumes", v.Source)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			r.volumes[v.Source] = d
		}
		m[v.Target] = d
	}
	for _, s := range svc.Secrets {
		target := s.Target
		if target == "" {
			target = "/run/secrets/" + s.Source
		}
		m[target] = filepath.Join(r.dir, "files", svc.Name, "secrets", s.Source)
	}
	for _, c := range svc.Configs {
		target := c.Target
		if target == "" {
			target = "/" + c.Source
		}
		m[target] = filepath.Join(r.dir, "files", svc.Name, "configs", c.Source)
	}
	return m
}

func (r *composeRun) rewritePaths(svc types.ServiceConfig, s string) string {
	m := r.mounts(svc)
	targets := make([]string, 0, len(m))
	for k := range m {
		targets = append(targets, k)
	}
	// Longest first, and only whole path elements: /var/lib/tunnel is not
	// the start of /var/lib/tunnel-agent.
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	for _, target := range targets {
		var b strings.Builder
		rest := s
		for {
			i := strings.Index(rest, target)
			if i < 0 {
				b.WriteString(rest)
				break
			}
			end := i + len(target)
			if end < len(rest) && strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", rune(rest[end])) {
				b.WriteString(rest[:end])
				rest = rest[end:]
				continue
			}
			b.WriteString(rest[:i] + m[target])
			rest = rest[end:]
		}
		s = b.String()
	}
	return s
}

// materialise writes svc's secrets and configs, rewritten as seen from it.
func (r *composeRun) materialise(svc types.ServiceConfig) {
	t := r.t
	write := func(kind, source, file string) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s %s: %v", kind, source, err)
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			lines = append(lines, r.rewrite(svc, l))
		}
		p := filepath.Join(r.dir, "files", svc.Name, kind, source)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range svc.Secrets {
		write("secrets", s.Source, r.p.Secrets[s.Source].File)
	}
	for _, c := range svc.Configs {
		write("configs", c.Source, r.p.Configs[c.Source].File)
	}
}

// command is what svc runs: entrypoint then command, rewritten.
func (r *composeRun) command(svc types.ServiceConfig) *exec.Cmd {
	args := append(slices.Clone([]string(svc.Entrypoint)), svc.Command...)
	if len(args) == 0 {
		r.t.Fatalf("%s: no command", svc.Name)
	}
	for i, a := range args {
		// A service's name is its host name where it is a flag's value
		// (--name gateway-a); elsewhere it is a word (bootstrap init).
		if other, ok := r.p.Services[a]; ok && i > 0 && strings.HasPrefix(args[i-1], "--") {
			args[i] = r.ips[nsOf(other)]
			continue
		}
		args[i] = r.rewrite(svc, a)
	}
	return r.exec(svc, args)
}

func (r *composeRun) exec(svc types.ServiceConfig, args []string) *exec.Cmd {
	home := filepath.Join(r.dir, "home", svc.Name)
	if err := os.MkdirAll(home, 0o700); err != nil {
		r.t.Fatal(err)
	}
	lp, err := lookPathIn(args[0], r.path)
	if err != nil {
		r.t.Fatalf("%s: %v", svc.Name, err)
	}
	cmd := &exec.Cmd{Path: lp, Args: args}
	cmd.Dir = home
	// The image's environment (Dockerfile ENV), then the service's.
	cmd.Env = []string{"PATH=" + r.path, "HOME=" + home, "TUNNEL_HOME=" + filepath.Join(home, "tunnel-home")}
	keys := make([]string, 0, len(svc.Environment))
	for k := range svc.Environment {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+r.rewrite(svc, envOf(svc, k)))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

func lookPathIn(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range filepath.SplitList(path) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in the PATH the test gives the services", name)
}

// start runs a long-lived service.
func (r *composeRun) start(svc types.ServiceConfig) *composeProc {
	r.materialise(svc)
	pr := &composeProc{name: svc.Name, cmd: r.command(svc), out: &syncBuffer{}, done: make(chan struct{})}
	pr.cmd.Stdout, pr.cmd.Stderr = pr.out, pr.out
	if err := pr.cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", svc.Name, err)
	}
	go func() {
		pr.err = pr.cmd.Wait()
		close(pr.done)
	}()
	r.procs = append(r.procs, pr)
	r.t.Logf("compose: started %s: %s", svc.Name, strings.Join(pr.cmd.Args, " "))
	return pr
}

// run runs a one-shot service to its end and wants exit status 0.
func (r *composeRun) run(svc types.ServiceConfig, timeout time.Duration) string {
	r.materialise(svc)
	cmd := r.command(svc)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	r.t.Logf("compose: running %s: %s", svc.Name, strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", svc.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			r.fail("%s exited with %v:\n%s", svc.Name, err, out.String())
		}
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		r.fail("%s did not finish within %v:\n%s", svc.Name, timeout, out.String())
	}
	return out.String()
}

// waitHealthy runs svc's healthcheck until it passes.
func (r *composeRun) waitHealthy(svc types.ServiceConfig, pr *composeProc, timeout time.Duration) {
	hc := svc.HealthCheck
	if hc == nil || len(hc.Test) < 2 {
		r.t.Fatalf("%s: dependents wait for it to be healthy, but it has no healthcheck", svc.Name)
	}
	var args []string
	switch hc.Test[0] {
	case "CMD":
		args = slices.Clone([]string(hc.Test[1:]))
	case "CMD-SHELL":
		args = []string{"sh", "-c", hc.Test[1]}
	default:
		r.t.Fatalf("%s: healthcheck %v", svc.Name, hc.Test)
	}
	for i, a := range args {
		args[i] = r.rewrite(svc, a)
	}
	deadline := time.Now().Add(timeout)
	var last []byte
	for time.Now().Before(deadline) {
		if pr != nil {
			select {
			case <-pr.done:
				r.fail("%s exited (%v) before it was healthy:\n%s", svc.Name, pr.err, pr.out.String())
			default:
			}
		}
		cmd := r.exec(svc, args)
		var err error
		if last, err = cmd.CombinedOutput(); err == nil {
			r.t.Logf("compose: %s is healthy", svc.Name)
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	r.fail("%s not healthy within %v; healthcheck %v said:\n%s", svc.Name, timeout, args, last)
}

func (r *composeRun) fail(format string, args ...any) {
	r.t.Helper()
	for _, pr := range r.procs {
		r.t.Logf("--- %s ---\n%s", pr.name, pr.out.String())
	}
	r.t.Fatalf(format, args...)
}

func (r *composeRun) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		pr := r.procs[i]
		_ = syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGKILL)
			<-pr.done
		}
	}
}

// order is the services in an order that satisfies depends_on.
func composeOrder(t *testing.T, p *types.Project) []string {
	var out []string
	state := map[string]int{}
	var visit func(string)
	visit = func(n string) {
		switch state[n] {
		case 1:
			t.Fatalf("depends_on cycle through %s", n)
		case 2:
			return
		}
		state[n] = 1
		deps := make([]string, 0)
		for d := range p.Services[n].DependsOn {
			deps = append(deps, d)
		}
		if x, ok := strings.CutPrefix(p.Services[n].NetworkMode, "service:"); ok {
			deps = append(deps, x)
		}
		sort.Strings(deps)
		for _, d := range deps {
			visit(d)
		}
		state[n] = 2
		out = append(out, n)
	}
	names := p.ServiceNames()
	sort.Strings(names)
	for _, n := range names {
		visit(n)
	}
	return out
}

// TestComposeTopology starts docker-compose.yml's services as processes and
// runs its client: psql and pgbench through the app agent's 127.0.0.1, to
// PostgreSQL on the database VM, over two gateways sharing one PostgreSQL
// store; and the MariaDB listener the same way.
func TestComposeTopology(t *testing.T) {
	p := mustLoadCompose(t)
	testenv.LookPath(t, "openssl")
	testenv.LookPath(t, "jq")
	if out, _ := exec.Command(bin("tunnel-gateway"), "run", "--help").CombinedOutput(); !strings.Contains(string(out), "--config") {
		t.Skip("tunnel-gateway run has no --config yet: gateway/internal/cli/configfile.go is not wired into run.go")
	}
	root := repoRoot(t)
	r := &composeRun{t: t, p: p, dir: t.TempDir(), ips: map[string]string{}, backends: map[string]string{}, volumes: map[string]string{}}

	// A loopback address per network namespace.
	var nss []string
	for _, name := range p.ServiceNames() {
		if nsOf(p.Services[name]) == name {
			nss = append(nss, name)
		}
	}
	sort.Strings(nss)
	for i, ns := range nss {
		r.ips[ns] = fmt.Sprintf("127.77.0.%d", 10+i)
	}

	// The database containers: real PostgreSQL and MariaDB, with the users
	// and databases their images create from the same environment.
	var stand struct {
		pg map[string]*pgtest.Server
		my *mariadbtest.Server
	}
	stand.pg = map[string]*pgtest.Server{}
	for _, name := range sortedCopy(p.ServiceNames()) {
		svc := p.Services[name]
		switch {
		case strings.HasPrefix(svc.Image, "postgres:") && envOf(svc, "POSTGRES_USER") != "":
			pg := pgtest.Start(t)
			user, db := envOf(svc, "POSTGRES_USER"), envOf(svc, "POSTGRES_DB")
			pw := envOf(svc, "POSTGRES_PASSWORD")
			if f := envOf(svc, "POSTGRES_PASSWORD_FILE"); f != "" {
				src := strings.TrimPrefix(f, "/run/secrets/")
				pw = readTrim(t, p.Secrets[src].File)
			}
			if user != pg.User || pw != pg.Password || db != pg.Database {
				pg.SuperPSQL(t, fmt.Sprintf(`CREATE ROLE "%s" LOGIN PASSWORD '%s'`, user, pw),
					fmt.Sprintf(`CREATE DATABASE "%s" OWNER "%s"`, db, user))
			}
			stand.pg[name] = pg
			r.backends[nsOf(svc)+":5432"] = pg.Addr
		case strings.HasPrefix(svc.Image, "mariadb:"):
			if envOf(svc, "MARIADB_USER") != mariadbtest.DefaultUser || envOf(svc, "MARIADB_PASSWORD") != mariadbtest.DefaultPassword ||
				envOf(svc, "MARIADB_DATABASE") != mariadbtest.DefaultDatabase {
				t.Fatalf("%s: the test's MariaDB has user %s, password %s, database %s; the compose file wants others",
					name, mariadbtest.DefaultUser, mariadbtest.DefaultPassword, mariadbtest.DefaultDatabase)
			}
			stand.my = mariadbtest.Start(t)
			r.backends[nsOf(svc)+":3306"] = stand.my.Addr
		}
	}
	pgBin := ""
	for _, pg := range stand.pg {
		pgBin = pg.BinDir
	}

	// PATH: what the images put on theirs.
	pathDir := filepath.Join(r.dir, "path")
	if err := os.MkdirAll(pathDir, 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"tunnel": bin("tunnel"), "tunnel-gateway": bin("tunnel-gateway"), "tunnel-agent": bin("tunnel-agent"),
		"tunnel-compose-bootstrap": filepath.Join(root, "deploy", "compose", "bootstrap.sh"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(pathDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := testenv.FindProgram("nc"); err != nil {
		// busybox's nc -z, for the agents' healthchecks.
		shim := "#!/bin/bash\n[ \"$1\" = -z ] || exit 2\nexec 3<>\"/dev/tcp/$2/$3\"\n"
		if err := os.WriteFile(filepath.Join(pathDir, "nc"), []byte(shim), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.path = strings.Join([]string{pathDir, pgBin, os.Getenv("PATH")}, string(os.PathListSeparator))
	t.Cleanup(r.stopAll)

	// What others wait for: completion (jobs) or health.
	waitFor := map[string]string{}
	for _, name := range p.ServiceNames() {
		for dep, d := range p.Services[name].DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully || waitFor[dep] == "" {
				waitFor[dep] = d.Condition
			}
		}
	}
	var clientOut string
	for _, name := range composeOrder(t, p) {
		svc := p.Services[name]
		if stand.pg[name] != nil || (stand.my != nil && strings.HasPrefix(svc.Image, "mariadb:")) {
			continue // started above
		}
		switch {
		case waitFor[name] == types.ServiceConditionCompletedSuccessfully:
			t.Logf("compose: %s done:\n%s", name, r.run(svc, 2*time.Minute))
		case waitFor[name] == "" && svc.Restart == types.RestartPolicyNo:
			clientOut = r.run(svc, 3*time.Minute)
		default:
			pr := r.start(svc)
			if waitFor[name] == types.ServiceConditionHealthy {
				r.waitHealthy(svc, pr, 90*time.Second)
			}
		}
	}
	t.Logf("client:\n%s", clientOut)
	for _, want := range []string{"connected through the tunnel to app as app", "number of transactions actually processed: 800/800",
		"client: psql and pgbench ran through the app agent"} {
		if !strings.Contains(clientOut, want) {
			r.fail("the client's output lacks %q:\n%s", want, clientOut)
		}
	}
	// The same app VM reaches MariaDB on the database VM through its
	// 127.0.0.1:3306 listener.
	if stand.my != nil {
		addr := net.JoinHostPort(r.ips["app-agent"], "3306")
		if out, err := stand.my.TryMySQL(addr, "SELECT CONCAT('via ', 'tunnel')"); err != nil || strings.TrimSpace(out) != "via tunnel" {
			r.fail("mariadb client through the app agent at %s: %q, %v", addr, out, err)
		}
	}
	// A second docker compose up runs the jobs again: they find their work
	// done.
	for _, job := range []string{"init", "enrol"} {
		if out := r.run(p.Services[job], time.Minute); !strings.Contains(out, "nothing to do") {
			r.fail("%s, run again: %q; want it to find its work done", job, out)
		}
	}
	// Both gateways serve the cluster from the one store.
	for _, gw := range []string{"gateway-a", "gateway-b"} {
		pin := readTrim(t, filepath.Join(r.volumes["enrolment"], "ca-pin"))
		addr := net.JoinHostPort(r.ips[gw], "8443")
		out, err := exec.Command(bin("tunnel"), "ca", "--gateway", addr, "--ca-pin", pin).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "BEGIN CERTIFICATE") {
			r.fail("tunnel ca from %s (%s): %v\n%s", gw, addr, err, out)
		}
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func mountAt(s types.ServiceConfig, target string) *types.ServiceVolumeConfig {
	for i := range s.Volumes {
		if s.Volumes[i].Target == target {
			return &s.Volumes[i]
		}
	}
	return nil
}
