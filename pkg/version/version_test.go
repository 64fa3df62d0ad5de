package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.modified", Value: "true"},
	}}
	var got Info
	fromBuildInfo(&got, bi)
	if got.Commit != "0123456789abcdef0123456789abcdef01234567" || !got.Modified || got.GoVersion != "go1.99.1" {
		t.Errorf("got %+v; want the stamped revision, modified, go1.99.1", got)
	}

	// A commit set with -ldflags wins over the stamp.
	got = Info{Commit: "fedcba"}
	fromBuildInfo(&got, bi)
	if got.Commit != "fedcba" || got.Modified {
		t.Errorf("got %+v; want the linker's commit kept and no stamp", got)
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v1.2.3", Commit: "0123456789abcdef0123", Modified: true, GoVersion: "go1.26.0", OS: "linux", Arch: "amd64"}
	if got, want := i.String(), "v1.2.3 (commit 0123456789ab-dirty, go1.26.0, linux/amd64)"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Commit == "" || i.OS != runtime.GOOS || i.Arch != runtime.GOARCH || i.GoVersion == "" {
		t.Errorf("Get() = %+v; want every field set", i)
	}
}
