package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A second agent on a data directory is refused with a sentence naming
// the first one; once the first is gone, the directory can be used again.
func TestDataDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lockDataDir: %v", err)
	}
	want := fmt.Sprintf("another tunnel-agent (pid %d) is already running on %s: stop it first or use another --data-dir", os.Getpid(), dir)
	if _, err := lockDataDir(dir); err == nil || err.Error() != want {
		t.Errorf("second lock: %v; want %s", err, want)
	}
	// Run refuses before it touches anything (here: before asking for a
	// token).
	if err := Run(context.Background(), Config{DataDir: dir}); err == nil || err.Error() != want {
		t.Errorf("Run on a locked data dir: %v; want %s", err, want)
	}
	first.release()
	first.release() // safe twice
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.release()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode: %v, %v; want 0700", fi.Mode(), err)
	}
}

// TestEnrolledAgentRefusesAnotherPin: an enrolled agent started with a
// --ca-pin other than the one it enrolled with says so instead of
// ignoring it (its renewal would fail hours later).
func TestEnrolledAgentRefusesAnotherPin(t *testing.T) {
	dir := t.TempDir()
	st, err := openIdentityStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	enrolled := "sha256:" + strings.Repeat("a", 64)
	if err := st.save(&Identity{Name: "web-1", Cluster: "prod", Gateway: "127.0.0.1:8443", Pin: enrolled}); err != nil {
		t.Fatal(err)
	}
	other := "sha256:" + strings.Repeat("b", 64)
	err = Run(context.Background(), Config{DataDir: dir, Pin: other})
	if err == nil || !strings.Contains(err.Error(), "--ca-pin "+other+" is not the pin this agent enrolled with ("+enrolled+")") {
		t.Fatalf("Run with another pin: %v; want the refusal naming both pins", err)
	}
}

// A listener whose port is taken is refused before the enrolment, which
// would spend the join token: here the gateway does not exist, so an
// enrolment would fail otherwise.
func TestListenerInUseRefusedBeforeEnrolment(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := &FileConfig{Listen: []Listen{{Name: "orders-db", Address: busy.Addr().String(), Target: "db-1/postgres"}}}
	err = Run(context.Background(), Config{DataDir: t.TempDir(), Gateway: "127.0.0.1:1", Pin: "sha256:" + strings.Repeat("a", 64),
		Token: "a-join-token", File: file})
	want := "listener orders-db: " + busy.Addr().String() + " is already in use by another program"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Run with a listener's port in use: %v; want %q before any enrolment", err, want)
	}
}
