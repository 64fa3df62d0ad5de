package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile in the data directory is held (flock) by the agent running on
// it, for the life of the process; it holds that agent's pid.
const LockFile = "lock"

// dataDirLock is the lock an agent holds on its data directory, so that a
// second agent started on the same directory is refused instead of
// fighting the first for the gateway connection.
type dataDirLock struct {
	f *os.File
}

// lockDataDir creates dir (0700) if needed and takes its lock. The lock is
// the kernel's (flock), so it goes with the process however it ends; the
// file is never removed, as removing it would let two agents lock two
// different files.
func lockDataDir(dir string) (*dataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		holder := "another tunnel-agent"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf("another tunnel-agent (pid %d)", pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("%s is already running on %s: stop it first or use another --data-dir", holder, dir)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the data directory %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataDirLock{f: f}, nil
}

// release gives the lock up. Safe to call twice.
func (l *dataDirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
}
