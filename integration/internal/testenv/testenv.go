// Package testenv holds small helpers shared by the end-to-end tests: free
// loopback ports, waiting for a listener, and looking up external tools in a
// way that skips for developers but fails in CI.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// InstallHint is appended to messages about missing external tools.
const InstallHint = testenv.InstallHint

// InCI reports whether the tests run in CI; see pkg/testenv.
func InCI() bool { return testenv.InCI() }

// Missing skips the test (developer machine) or fails it (CI) because a
// prerequisite is not available; see pkg/testenv.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, format, args...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. There
// is an unavoidable race with other processes; prefer listening on ":0" when
// the code under test allows it.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv.FreePort: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv.FreeUDPPort: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// WaitTCP polls addr until a TCP connection succeeds, failing the test if that
// does not happen within timeout.
func WaitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	if err := PollTCP(addr, timeout, nil); err != nil {
		t.Fatalf("testenv.WaitTCP: %v", err)
	}
}

// PollTCP polls addr until a TCP connection succeeds or timeout passes. If
// alive is non-nil it is called between attempts; a non-nil error from it
// (e.g. "server process exited") stops the wait early and is returned.
func PollTCP(addr string, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	var lastErr error
	for {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
		if alive != nil {
			if err := alive(); err != nil {
				return fmt.Errorf("waiting for %s: %w", addr, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing accepted TCP connections on %s within %v (last error: %v)", addr, timeout, lastErr)
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// LookPath returns the absolute path of the external program name, or
// skips (fails in CI) the test; see pkg/testenv.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	return testenv.LookPath(t, name)
}

// FindProgram is LookPath without the testing.TB; see pkg/testenv.
func FindProgram(name string) (string, error) { return testenv.FindProgram(name) }

// CurrentUser returns the login name of the user running the tests.
func CurrentUser(t testing.TB) string {
	t.Helper()
	u, err := user.Current()
	if err == nil && u.Username != "" {
		return u.Username
	}
	for _, env := range []string{"USER", "LOGNAME"} {
		if v := os.Getenv(env); v != "" {
			return v
		}
	}
	t.Fatalf("testenv.CurrentUser: cannot determine current user: %v", err)
	return ""
}

// IsRoot reports whether the tests run as uid 0.
func IsRoot() bool { return os.Geteuid() == 0 }
