package cli

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/version"
)

func TestVersionCommand(t *testing.T) {
	text, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if want := "tunnel " + version.Get().String() + "\n"; text != want {
		t.Errorf("tunnel version printed %q; want %q", text, want)
	}
	flag, err := run(t, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if flag != text {
		t.Errorf("tunnel --version printed %q; want what tunnel version prints, %q", flag, text)
	}
	js, err := run(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v version.Info
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("tunnel version --json printed %q: %v", js, err)
	}
	if v.Version != version.Version || v.Commit == "" || v.GoVersion == "" || v.OS != runtime.GOOS || v.Arch != runtime.GOARCH {
		t.Errorf("tunnel version --json = %+v", v)
	}
	for _, k := range []string{`"version"`, `"commit"`, `"go_version"`, `"os"`, `"arch"`} {
		if !strings.Contains(js, k) {
			t.Errorf("tunnel version --json lacks %s: %s", k, js)
		}
	}
	if _, err := run(t, "version", "extra"); err == nil || !strings.Contains(err.Error(), `unknown command "extra"`) {
		t.Errorf("tunnel version extra: %v; want a refusal", err)
	}
}
