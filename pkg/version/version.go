// Package version holds the version of the tunnel binaries, set at build
// time with -ldflags "-X github.com/tunnelhq/tunnel/pkg/version.Version=v1.2.3".
package version

// Version is the release version, or "dev" for a local build.
var Version = "dev"
