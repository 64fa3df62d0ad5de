// Package testenv holds small helpers shared by the end-to-end tests: free
// loopback ports, waiting for a listener, and looking up external tools in a
// way that skips for developers but fails in CI.
package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"
)

// InstallHint is appended to messages about missing external tools.
const InstallHint = "run scripts/install-deps.sh to install the test dependencies"

// InCI reports whether the tests run in CI (the CI environment variable is set
// to anything but "" / "0" / "false"). In CI a missing tool is a failure,
// elsewhere it skips the test.
func InCI() bool {
	switch os.Getenv("CI") {
	case "", "0", "false", "FALSE", "False":
		return false
	}
	return true
}

// Missing skips the test (developer machine) or fails it (CI) because a
// prerequisite is not available. format/args describe what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + "; " + InstallHint
	if InCI() {
		t.Fatalf("%s (CI is set, so missing tools are an error)", msg)
	}
	t.Skipf("%s (skipping; set CI=1 to make this an error)", msg)
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

// LookPath returns the absolute path of the external program name (searched
// in PATH, then in the sbin directories, which are often not in a normal
// user's PATH). If it is missing the test is skipped, or failed when the CI
// environment variable is set.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	if p, err := FindProgram(name); err == nil {
		return p
	}
	Missing(t, "required program %q not found in PATH or /usr/sbin, /sbin, /usr/local/sbin", name)
	return "" // unreachable
}

// FindProgram is LookPath without the testing.TB: it returns the absolute path
// of name or an error.
func FindProgram(name string) (string, error) {
	if filepath.IsAbs(name) {
		if isExecutable(name) {
			return name, nil
		}
		return "", fmt.Errorf("%s: not an executable file", name)
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New(name + ": executable not found")
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

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
