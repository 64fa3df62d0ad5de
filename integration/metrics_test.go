package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

var metricsRE = regexp.MustCompile(`Metrics on http://(\S+)/metrics`)

// metricsAddr is where the gateway started with --metrics-addr said it
// serves its metrics.
func (c *cluster) metricsAddr() string {
	c.t.Helper()
	var addr string
	waitFor(c.t, 10*time.Second, "the gateway to print its metrics address", func() bool {
		m := metricsRE.FindStringSubmatch(c.log.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr
}

// scrape is one reading of /metrics.
type scrape map[string]*dto.MetricFamily

func getMetrics(t testing.TB, addr string) scrape {
	t.Helper()
	code, body := httpGet(t, addr, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v\n%s", err, body)
	}
	return mfs
}

func httpGet(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// value is the sample of name with exactly the labels given (name=value
// pairs), 0 if there is none; a histogram gives its count.
func (s scrape) value(name string, labels ...string) float64 {
	mf := s[name]
	if mf == nil {
		return 0
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := len(got) == len(want)
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		}
	}
	return 0
}

// TestMetrics: the real gateway's /metrics moves with real traffic by the
// right amounts: logins, certificates, an SSH session and its bytes,
// tunnel streams, and a revocation whose cut streams land in the
// revocation histogram; /healthz and /readyz answer.
func TestMetrics(t *testing.T) {
	e := newSSHEnvWith(t, "--metrics-addr", "127.0.0.1:0")
	addr := e.c.metricsAddr()
	if code, body := httpGet(t, addr, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q; want 200 ok", code, body)
	}
	if code, body := httpGet(t, addr, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q; want 200 ready", code, body)
	}

	before := getMetrics(t, addr)
	for _, name := range []string{"go_goroutines", "process_open_fds", "tunnel_gateway_build_info"} {
		if before[name] == nil {
			t.Errorf("%s is missing", name)
		}
	}
	if got := before.value("tunnel_gateway_agents_connected"); got != 1 {
		t.Errorf("agents_connected = %v; want 1 (web-1)", got)
	}
	if got := before.value("tunnel_gateway_connections", "kind", "agent", "transport", "udp"); got != 1 {
		t.Errorf(`connections{kind="agent",transport="udp"} = %v; want 1`, got)
	}

	// A login that fails (wrong password), then one that succeeds.
	carol := addUser(t, e.admin, "carol", "ops")
	bad := e.c.newUserHandle("carol", "not-carols-password-at-all", carol.otp)
	bad.fails("login", "--gateway", e.c.addr, "--ca-pin", e.c.pin, "--user", "carol", "--password-file", bad.pwPath, "--otp", "000000")
	carol.login()
	after := getMetrics(t, addr)
	delta := func(name string, labels ...string) float64 {
		return after.value(name, labels...) - before.value(name, labels...)
	}
	if d := delta("tunnel_gateway_logins_total", "outcome", "success"); d != 1 {
		t.Errorf(`logins_total{outcome="success"} moved by %v; want 1`, d)
	}
	if d := delta("tunnel_gateway_logins_total", "outcome", "failure"); d != 1 {
		t.Errorf(`logins_total{outcome="failure"} moved by %v; want 1`, d)
	}
	if d := delta("tunnel_gateway_certificates_issued_total", "kind", "x509", "subject", "user"); d != 1 {
		t.Errorf(`certificates_issued_total{kind="x509",subject="user"} moved by %v; want 1 (carol's login)`, d)
	}
	if d := delta("tunnel_gateway_store_operation_duration_seconds", "operation", "get_user"); d < 1 {
		t.Errorf(`store_operation_duration_seconds{operation="get_user"} moved by %v; want the logins' reads`, d)
	}

	// An SSH session: one session, its certificate, its stream, its bytes.
	before = after
	const word = "metrics-session-output"
	if code, out, se := carol.exitCode("ssh", e.login+"@web-1", "echo", word); code != 0 || !strings.Contains(out, word) {
		t.Fatalf("tunnel ssh echo: exit %d, stdout %q, stderr %q", code, out, se)
	}
	waitFor(t, 20*time.Second, "the SSH stream to end", func() bool {
		after = getMetrics(t, addr)
		return after.value("tunnel_gateway_streams_active", "path", "relayed") == 0
	})
	if d := delta("tunnel_gateway_sessions_total", "outcome", "success"); d != 1 {
		t.Errorf(`sessions_total{outcome="success"} moved by %v; want 1`, d)
	}
	if d := delta("tunnel_gateway_certificates_issued_total", "kind", "ssh-user", "subject", "user"); d != 1 {
		t.Errorf(`certificates_issued_total{kind="ssh-user",subject="user"} moved by %v; want 1 (the session's)`, d)
	}
	if d := delta("tunnel_gateway_streams_total", "path", "relayed"); d < 1 {
		t.Errorf(`streams_total{path="relayed"} moved by %v; want the session's stream`, d)
	}
	// Both ways carry at least the SSH handshake and the command's output.
	if d := delta("tunnel_gateway_relayed_bytes_total", "direction", "out"); d < float64(len(word)) {
		t.Errorf(`relayed_bytes_total{direction="out"} moved by %v; want at least the session's output`, d)
	}
	if d := delta("tunnel_gateway_relayed_bytes_total", "direction", "in"); d <= 0 {
		t.Errorf(`relayed_bytes_total{direction="in"} moved by %v; want the session's input`, d)
	}

	// Two tunnel streams, open, then cut by locking carol.
	port := freeLoopbackPort(t)
	paddr := fmt.Sprintf("127.0.0.1:%d", port)
	_, out := carol.backgroundOut("proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
	dialRetry(t, paddr, echoOnce, 20*time.Second)
	waitFor(t, 20*time.Second, "the probe streams to end", func() bool {
		before = getMetrics(t, addr)
		return before.value("tunnel_gateway_streams_active", "path", "relayed") == 0
	})
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c); err != nil {
			t.Fatalf("stream before the lock: %v", err)
		}
		conns = append(conns, c)
	}
	open := getMetrics(t, addr)
	if got := open.value("tunnel_gateway_streams_active", "path", "relayed"); got != 2 {
		t.Errorf(`streams_active{path="relayed"} = %v with two connections open; want 2`, got)
	}
	if d := open.value("tunnel_gateway_streams_total", "path", "relayed") - before.value("tunnel_gateway_streams_total", "path", "relayed"); d != 2 {
		t.Errorf(`streams_total{path="relayed"} moved by %v for two connections; want 2`, d)
	}
	e.admin.must("admin", "users", "lock", "carol")
	line := "connection to web-1/echo closed by the gateway: access revoked by an administrator"
	waitFor(t, 20*time.Second, "both streams to be cut", func() bool { return strings.Count(out(), line) >= 2 })
	waitFor(t, 20*time.Second, "the cut streams to be observed", func() bool {
		after = getMetrics(t, addr)
		return after.value("tunnel_gateway_revocation_close_seconds") >= before.value("tunnel_gateway_revocation_close_seconds")+2
	})
	if d := delta("tunnel_gateway_revocation_close_seconds"); d != 2 {
		t.Errorf("revocation_close_seconds observed %v streams; want the 2 cut", d)
	}
	if d := delta("tunnel_gateway_revocations_total", "kind", "user_locked"); d != 1 {
		t.Errorf(`revocations_total{kind="user_locked"} moved by %v; want 1`, d)
	}
	if got := after.value("tunnel_gateway_streams_active", "path", "relayed"); got != 0 {
		t.Errorf(`streams_active{path="relayed"} = %v after the cut; want 0`, got)
	}
	// Nothing here is labelled with a name.
	code, body := httpGet(t, addr, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, name := range []string{"carol", "alice", "web-1", e.login} {
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "tunnel_gateway_") && strings.Contains(l, `"`+name+`"`) {
				t.Errorf("a metric carries the name %q: %s", name, l)
			}
		}
	}
}

// TestMetricsReadiness: /readyz turns not ready when the gateway's
// PostgreSQL stops, while /healthz stays up, and ready again when it is
// back.
func TestMetricsReadiness(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.URL("")
	c := initSharedGateways(t, url, 1)[0]
	c.start("--store", url, "--metrics-addr", "127.0.0.1:0")
	addr := c.metricsAddr()
	if code, body := httpGet(t, addr, "/readyz"); code != 200 {
		t.Fatalf("/readyz with the store up: %d %q; want 200", code, body)
	}
	pg.Stop()
	var body string
	waitFor(t, 60*time.Second, "/readyz to say not ready", func() bool {
		var code int
		code, body = httpGet(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if want := "not ready: the gateway cannot reach its store\n"; body != want {
		t.Errorf("/readyz with the store away: %q; want %q", body, want)
	}
	if code, _ := httpGet(t, addr, "/healthz"); code != 200 {
		t.Errorf("/healthz with the store away: %d; want 200 (the process is alive)", code)
	}
	if s := getMetrics(t, addr); s.value("tunnel_gateway_store_errors_total", "operation", "get_meta", "kind", "unavailable") < 1 {
		t.Errorf(`store_errors_total{operation="get_meta",kind="unavailable"} did not move while the store was away`)
	}
	pg.StartAgain(t)
	waitFor(t, 60*time.Second, "/readyz to say ready again", func() bool {
		code, _ := httpGet(t, addr, "/readyz")
		return code == 200
	})
}

// startAgentWith is startAgent with extra flags for tunnel-agent run.
func (c *cluster) startAgentWith(name, token, yaml string, extra ...string) *agentProc {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{t: t, name: name, dataDir: filepath.Join(dir, "data"), cfgFile: filepath.Join(dir, "agent.yaml"), c: c}
	if err := os.WriteFile(a.cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "--data-dir", a.dataDir, "--gateway", c.addr, "--ca-pin", c.pin,
		"--config", a.cfgFile, "--log-level", "debug", "--token", token}, extra...)
	a.cmd = exec.Command(bin("tunnel-agent"), args...)
	a.log = &syncBuffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", name, err)
	}
	a.done = make(chan struct{})
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", a.name, a.log.String())
		}
	})
	return a
}

// TestAgentMetrics: an agent's /metrics and /readyz follow its real
// connection to a real gateway: ready and one UDP connection once
// connected, a stream delivered to it counted with its bytes, refused
// handshakes counted by reason and not ready while an administrator locks
// it, a reconnect counted once unlocked.
func TestAgentMetrics(t *testing.T) {
	if out, _ := exec.Command(bin("tunnel-agent"), "run", "--help").CombinedOutput(); !strings.Contains(string(out), "--metrics-addr") {
		// agent.Config.Metrics and its hooks in agent/agent.go and
		// agent/session.go are not merged yet (see agent/metrics.go).
		t.Skip("tunnel-agent run has no --metrics-addr yet")
	}
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	web := c.startAgentWith("web-1", admin.token("web-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n",
		"--metrics-addr", "127.0.0.1:0")
	var addr string
	waitFor(t, 20*time.Second, "the agent to print its metrics address", func() bool {
		m := metricsRE.FindStringSubmatch(web.log.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	waitFor(t, 20*time.Second, "the agent to be ready", func() bool {
		code, _ := httpGet(t, addr, "/readyz")
		return code == 200
	})
	s := getMetrics(t, addr)
	if got := s.value("tunnel_agent_gateway_connections", "path", "udp"); got != 1 {
		t.Errorf(`gateway_connections{path="udp"} = %v; want 1`, got)
	}
	if got := s.value("tunnel_agent_gateway_connects_total", "path", "udp"); got != 1 {
		t.Errorf(`gateway_connects_total{path="udp"} = %v; want 1`, got)
	}
	if s["go_goroutines"] == nil || s["tunnel_agent_build_info"] == nil {
		t.Error("the runtime metrics or build_info are missing")
	}

	// A stream from app-1 to web-1/echo, delivered by web-1.
	port := freeLoopbackPort(t)
	laddr := fmt.Sprintf("127.0.0.1:%d", port)
	// direct: off keeps the stream on the gateway's relay.
	c.startAgent("app-1", admin.token("app-1"), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: web-1/echo}\ndirect: off\n", laddr))
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/echo")
	admin.waitOnline("app-1", true, 20*time.Second)
	dialRetry(t, laddr, echoOnce, 20*time.Second)
	// echoOnce sends "ping\n" and reads it back: web-1 received and sent
	// at least those 5 bytes. A scrape is no snapshot (each series is read
	// at its own moment), so wait for all of them to agree.
	waitFor(t, 20*time.Second, "the stream's end and its bytes to be counted", func() bool {
		s = getMetrics(t, addr)
		return s.value("tunnel_agent_streams_active", "path", "relayed") == 0 && s.value("tunnel_agent_streams_total", "path", "relayed") >= 1 &&
			s.value("tunnel_agent_stream_bytes_total", "direction", "received") >= 5 && s.value("tunnel_agent_stream_bytes_total", "direction", "sent") >= 5
	})
	if got := s.value("tunnel_agent_stream_bytes_total", "direction", "received"); got < 5 {
		t.Errorf(`stream_bytes_total{direction="received"} = %v; want at least 5`, got)
	}
	if got := s.value("tunnel_agent_stream_bytes_total", "direction", "sent"); got < 5 {
		t.Errorf(`stream_bytes_total{direction="sent"} = %v; want at least 5`, got)
	}

	// Locked: refused, counted, not ready; unlocked: back, a reconnect.
	admin.must("admin", "agents", "lock", "web-1")
	var body string
	waitFor(t, 30*time.Second, "the locked agent's /readyz to say not ready", func() bool {
		var code int
		code, body = httpGet(t, addr, "/readyz")
		return code == 503
	})
	if want := "not ready: the agent is not connected to any gateway\n"; body != want {
		t.Errorf("/readyz while locked: %q; want %q", body, want)
	}
	waitFor(t, 30*time.Second, "a refused handshake to be counted as locked", func() bool {
		return getMetrics(t, addr).value("tunnel_agent_handshake_failures_total", "reason", "locked") >= 1
	})
	admin.must("admin", "agents", "unlock", "web-1")
	waitFor(t, 60*time.Second, "the agent to be ready again", func() bool {
		code, _ := httpGet(t, addr, "/readyz")
		return code == 200
	})
	s = getMetrics(t, addr)
	if got := s.value("tunnel_agent_gateway_reconnects_total"); got != 1 {
		t.Errorf("gateway_reconnects_total = %v after one lock and unlock; want 1", got)
	}
	if got := s.value("tunnel_agent_gateway_connects_total", "path", "udp"); got != 2 {
		t.Errorf(`gateway_connects_total{path="udp"} = %v; want 2`, got)
	}
}
