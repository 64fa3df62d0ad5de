// Package version says which build of the tunnel binaries is running.
//
// Version and Commit are set at build time (the Makefile does it):
//
//	go build -ldflags "-X github.com/tunnelhq/tunnel/pkg/version.Version=v1.2.3 \
//	    -X github.com/tunnelhq/tunnel/pkg/version.Commit=$(git rev-parse HEAD)"
//
// When they are not, [Get] falls back to what the Go toolchain stamped into
// the binary (the VCS revision of a `go build` inside the repository).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version, or "dev" for a local build.
var Version = "dev"

// Commit is the full VCS revision the binary was built from; empty means
// "ask the build information".
var Commit = ""

// Info describes the running binary.
type Info struct {
	Version string `json:"version"`
	// Commit is the VCS revision, "unknown" when nobody recorded it.
	Commit string `json:"commit"`
	// Modified: the working tree had uncommitted changes (from the Go
	// toolchain's stamp only).
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

// Get returns the running binary's Info.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		fromBuildInfo(&info, bi)
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// fromBuildInfo fills what the linker flags left empty from the
// toolchain's stamp.
func fromBuildInfo(info *Info, bi *debug.BuildInfo) {
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if info.Commit != "" {
		return
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
}

// String is one line for `--version`: "v1.2.3 (commit 0123abc, go1.26.0, linux/amd64)".
func (i Info) String() string {
	commit := i.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if i.Modified {
		commit += "-dirty"
	}
	return fmt.Sprintf("%s (commit %s, %s, %s/%s)", i.Version, commit, i.GoVersion, i.OS, i.Arch)
}
