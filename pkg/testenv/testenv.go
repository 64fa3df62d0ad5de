// Package testenv is for tests only: it finds the external programs a test
// needs (ssh, sshd, ssh-keygen, psql...) so that a missing one skips the
// test on a developer's machine and fails it in CI, where `make test` sets
// CI. Use [LookPath] instead of exec.LookPath plus t.Skip: a test that
// silently skips in CI proves nothing.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// InstallHint is appended to messages about missing external tools.
const InstallHint = "run scripts/install-deps.sh to install the test dependencies"

// InCI reports whether the tests run in CI (the CI environment variable is
// set to anything but "", "0" or "false"). In CI a missing tool is a
// failure, elsewhere it skips the test.
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

// LookPath returns the absolute path of the external program name (searched
// in PATH, then in the sbin directories, which are often not in a normal
// user's PATH). If it is missing the test is skipped, or failed in CI.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	if p, err := FindProgram(name); err == nil {
		return p
	}
	Missing(t, "required program %q not found in PATH or /usr/sbin, /sbin, /usr/local/sbin", name)
	return "" // unreachable
}

// FindProgram is LookPath without the testing.TB: it returns the absolute
// path of name or an error.
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
