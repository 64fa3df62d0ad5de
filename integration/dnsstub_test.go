package integration

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/netns"
	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// stubListen is where the stub answers inside the test's namespace: the
// address docs/DNS-STUB.md suggests (dnsstub.Suggested).
const stubListen = "127.0.0.153:53"

// TestDNSStubPsqlThroughSystemResolver: a real psql connects to
// "host=orders-db.prod.tunnel", the name resolved by the system resolver
// (glibc's getaddrinfo, as every app does) pointed at the agent's DNS stub
// by /etc/resolv.conf. It runs in a network namespace of its own, where
// `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over
// /etc/resolv.conf, so the machine's resolver is untouched; PostgreSQL
// (standing for the agent's listener) and the stub listen on that
// namespace's loopback. The stub runs as agent/internal/dnsstub/cmd/tunnel-dnsstub
// (this package cannot import the agent's internal packages). A name the
// stub does not know fails to resolve. Needs root: skipped without it,
// failed under CI=1.
func TestDNSStubPsqlThroughSystemResolver(t *testing.T) {
	if !testenv.IsRoot() {
		testenv.Missing(t, "this test needs root: it creates a network namespace and writes /etc/netns/NAME/resolv.conf")
	}
	testenv.LookPath(t, "psql")
	getent := testenv.LookPath(t, "getent")
	ipBin := testenv.LookPath(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := netns.CleanStale(); err != nil {
		t.Logf("cleaning stale namespaces: %v", err)
	}
	ns, err := netns.Add(ctx, netns.Prefix("test")+"dns")
	if errors.Is(err, netns.ErrNotPermitted) || errors.Is(err, netns.ErrNoIP) {
		testenv.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Delete() })

	// The namespace's resolv.conf names the stub, as docs/DNS-STUB.md
	// tells operators to do on a machine without systemd-resolved.
	etc := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(etc) })
	listen := netip.MustParseAddrPort(stubListen)
	resolv := "nameserver " + listen.Addr().String() + "\noptions timeout:2 attempts:3\n"
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		t.Fatal(err)
	}

	// PostgreSQL (standing for the agent's listener) in the namespace.
	var pg *pgtest.Server
	if err := ns.Do(func() error { pg = pgtest.Start(t); return nil }); err != nil {
		t.Fatal(err)
	}

	// The stub, started inside the namespace.
	stubBin := filepath.Join(t.TempDir(), "tunnel-dnsstub")
	if out, err := exec.Command("go", "build", "-o", stubBin, "github.com/tunnelhq/tunnel/agent/internal/dnsstub/cmd/tunnel-dnsstub").CombinedOutput(); err != nil {
		t.Fatalf("building tunnel-dnsstub: %v\n%s", err, out)
	}
	stub := exec.Command(stubBin, "--listen", listen.String(), "--cluster", "prod", "--name", "orders-db="+pg.Host)
	stub.Stderr = t.Output()
	stdout, err := stub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Start(stub); err != nil {
		t.Fatalf("starting tunnel-dnsstub in the namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = stub.Process.Signal(syscall.SIGTERM)
		_ = stub.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "dns stub ready udp="+listen.String()) {
			t.Fatalf("tunnel-dnsstub did not start: %q", line)
		}
	case <-ctx.Done():
		t.Fatal("tunnel-dnsstub did not say it was ready")
	}

	inNS := func(env []string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, ipBin, append([]string{"netns", "exec", ns.Name}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	// getaddrinfo, the call every app makes, through the stub.
	out, err := inNS(nil, getent, "hosts", "orders-db.prod.tunnel")
	if err != nil || !strings.HasPrefix(out, pg.Host+" ") {
		t.Fatalf("getent hosts orders-db.prod.tunnel in the namespace: %v\n%s", err, out)
	}

	// psql with a host name in its connection string.
	pgEnv := []string{"PGPASSWORD=" + pg.Password, "PGCONNECT_TIMEOUT=15", "PGSSLMODE=disable"}
	conn := func(host string) string {
		return "host=" + host + " port=" + strconv.Itoa(pg.Port) + " user=" + pg.User + " dbname=" + pg.Database
	}
	out, err = inNS(pgEnv, pg.PSQLPath, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		conn("orders-db.prod.tunnel"), "-c", "select 'resolved by the stub: ' || inet_server_addr()")
	if err != nil || out != "resolved by the stub: "+pg.Host+"/32" {
		t.Fatalf("psql \"%s\" in the namespace: %v\n%s", conn("orders-db.prod.tunnel"), err, out)
	}

	// A name the stub does not know does not resolve (NXDOMAIN).
	out, err = inNS(pgEnv, pg.PSQLPath, "-X", "-q", "-A", "-t", conn("billing.prod.tunnel"), "-c", "select 1")
	if err == nil || !strings.Contains(out, "could not translate host name") {
		t.Fatalf("psql to billing.prod.tunnel, a name the stub does not know: want \"could not translate host name\", got %v\n%s", err, out)
	}
}
