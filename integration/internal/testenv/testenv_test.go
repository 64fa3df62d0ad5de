package testenv

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFreePorts(t *testing.T) {
	p := FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("FreePort %d not usable: %v", p, err)
	}
	defer l.Close()

	u := FreeUDPPort(t)
	c, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(u))
	if err != nil {
		t.Fatalf("FreeUDPPort %d not usable: %v", u, err)
	}
	c.Close()

	WaitTCP(t, l.Addr().String(), time.Second)
}

func TestPollTCPTimesOut(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	err := PollTCP(addr, 100*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("PollTCP on closed port: %v, want an error naming %s", err, addr)
	}
	stop := fmt.Errorf("process exited")
	if err := PollTCP(addr, time.Minute, func() error { return stop }); err == nil || !strings.Contains(err.Error(), "process exited") {
		t.Fatalf("PollTCP with failing alive: %v", err)
	}
}

func TestLookPathAndUser(t *testing.T) {
	if p := LookPath(t, "sh"); !strings.HasPrefix(p, "/") {
		t.Fatalf("LookPath(sh) = %q, want absolute", p)
	}
	if u := CurrentUser(t); u == "" {
		t.Fatal("CurrentUser empty")
	}
}

// recorder stands in for a testing.TB to observe Skip/Fatal.
type recorder struct {
	testing.TB
	skipped, fatal string
}

type stopped struct{}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	panic(stopped{})
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	panic(stopped{})
}

func lookMissing(t *testing.T) *recorder {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if _, ok := v.(stopped); !ok {
					panic(v)
				}
			}
		}()
		LookPath(r, "no-such-program-testenv")
	}()
	return r
}

func TestLookPathMissing(t *testing.T) {
	t.Setenv("CI", "")
	r := lookMissing(t)
	if r.fatal != "" || !strings.Contains(r.skipped, "install-deps.sh") {
		t.Errorf("without CI: skipped %q, fatal %q; want a skip mentioning install-deps.sh", r.skipped, r.fatal)
	}

	t.Setenv("CI", "true")
	r = lookMissing(t)
	if r.skipped != "" || !strings.Contains(r.fatal, "install-deps.sh") {
		t.Errorf("with CI: skipped %q, fatal %q; want a failure mentioning install-deps.sh", r.skipped, r.fatal)
	}
}
