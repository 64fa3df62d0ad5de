package dnsstub

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// TestDig asks the stub with dig, a real client, over UDP and TCP.
func TestDig(t *testing.T) {
	dig := testenv.LookPath(t, "dig")
	s := startStub(t, nil)
	_, tcpAddr := s.Addr()
	port := tcpAddr.String()[strings.LastIndexByte(tcpAddr.String(), ':')+1:]
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args = append([]string{"@127.0.0.1", "-p", port, "+time=5", "+tries=2"}, args...)
		out, err := exec.CommandContext(ctx, dig, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, transport := range []string{"+notcp", "+tcp"} {
		if out := strings.TrimSpace(run(transport, "+short", "orders-db.prod.tunnel", "A")); out != "127.0.0.7" {
			t.Errorf("dig %s orders-db.prod.tunnel A: got %q, want 127.0.0.7", transport, out)
		}
		if out := strings.TrimSpace(run(transport, "+short", "Cache6.PROD.tunnel", "AAAA")); out != "::1" {
			t.Errorf("dig %s Cache6.PROD.tunnel AAAA: got %q, want ::1", transport, out)
		}
		if out := run(transport, "nosuch.prod.tunnel", "A"); !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "prod.tunnel.\t\t5\tIN\tSOA") {
			t.Errorf("dig %s nosuch.prod.tunnel: want NXDOMAIN with the SOA:\n%s", transport, out)
		}
		if out := run(transport, "example.com", "A"); !strings.Contains(out, "status: REFUSED") {
			t.Errorf("dig %s example.com: want REFUSED:\n%s", transport, out)
		}
	}
}
