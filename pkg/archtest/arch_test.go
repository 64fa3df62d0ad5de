// Package archtest checks the architecture rules of DESIGN.md with the go
// tool itself: pkg/ never imports a component, and the `tunnel` CLI does not
// link server-only code.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tunnelhq/tunnel/"

// deps returns the transitive dependencies of pattern's packages, keyed by
// the package that has them.
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}}:{{join .Deps " "}}`, pattern).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, ds, _ := strings.Cut(line, ":")
		m[pkg] = strings.Fields(ds)
	}
	return m
}

func TestPkgImportsNoComponent(t *testing.T) {
	for pkg, ds := range deps(t, "../...") {
		for _, d := range ds {
			for _, comp := range []string{"gateway", "agent", "client", "certs"} {
				if d == module+comp || strings.HasPrefix(d, module+comp+"/") {
					t.Errorf("%s depends on %s: packages under pkg/ must not import components", pkg, d)
				}
			}
		}
	}
}

func TestClientDoesNotLinkServerCode(t *testing.T) {
	all := deps(t, "../../client/...")
	// Guard against a listing that checks nothing.
	if ds := all[module+"client/cmd/tunnel"]; !contains(ds, module+"pkg/api") {
		t.Fatalf("go list shows no dependency of client/cmd/tunnel on pkg/api; the check would be empty: %v", ds)
	}
	for pkg, ds := range all {
		for _, d := range ds {
			for _, server := range []string{"gateway", "certs", "pkg/store", "pkg/seal"} {
				if d == module+server || strings.HasPrefix(d, module+server+"/") {
					t.Errorf("%s depends on %s: the tunnel client must not link server-only code", pkg, d)
				}
			}
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
