//go:build linux || darwin

package netguard

import (
	"fmt"
	"runtime"
	"syscall"
)

// darwinOpenMax is macOS's per-process ceiling (OPEN_MAX) when the hard
// limit is unlimited.
const darwinOpenMax = 10240

// RaiseFileLimit raises the soft limit on open files (RLIMIT_NOFILE) to the
// hard limit, and returns the soft limit now in force. (Go's runtime does
// the same at start-up since Go 1.19; calling it again makes the budget a
// gateway or agent computes from it explicit, and is harmless.) On error it
// returns the limit in force, which may be 0 if unknown.
func RaiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if rl.Cur >= rl.Max {
		return uint64(rl.Cur), nil
	}
	want := rl
	want.Cur = rl.Max
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err != nil && runtime.GOOS == "darwin" && rl.Cur < darwinOpenMax {
		want.Cur = darwinOpenMax
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	}
	if err != nil {
		return uint64(rl.Cur), fmt.Errorf("raise the open-file limit from %d to %d: %w", rl.Cur, want.Cur, err)
	}
	return uint64(want.Cur), nil
}
