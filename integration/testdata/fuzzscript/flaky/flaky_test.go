package flaky

import (
	"os"
	"syscall"
	"testing"
)

func FuzzFlaky(f *testing.F) {
	f.Add([]byte("a"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mark := os.Getenv("FLAKY_MARK")
		if _, err := os.Stat(mark); err == nil || len(b) < 3 {
			return
		}
		os.WriteFile(mark, nil, 0o600)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	})
}
