package integration

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/vaulttest"
	"github.com/tunnelhq/tunnel/pkg/seal"
)

// TestKEKRotateKilledSQLite and TestKEKRotateKilledPostgres kill tunnel-gateway
// kek rotate (SIGKILL) midway, while a gateway runs: the gateway keeps
// working (users whose secrets were re-sealed and users whose were not log
// in), a rerun finishes the rotation, and after a restart everything opens
// with the new key alone and the audit log verifies.
func TestKEKRotateKilledSQLite(t *testing.T) { testKEKRotateKilled(t, false) }

func TestKEKRotateKilledPostgres(t *testing.T) { testKEKRotateKilled(t, true) }

func testKEKRotateKilled(t *testing.T, pg bool) {
	var c *cluster
	var storeArgs, runArgs []string
	if pg {
		dbs := newPGDatabases(t, pgtest.Start(t))
		url := dbs.url(dbs.create(t))
		runArgs = []string{"--store", url, "--id", "gw-1", "--api-addr", "127.0.0.11:0", "--name", "127.0.0.11", "--login-burst", "1000"}
		c = startSharedGateways(t, url, 1, "--login-burst", "1000")[0]
		storeArgs = []string{"--data-dir", c.dataDir, "--store", url}
	} else {
		runArgs = []string{"--login-burst", "1000"}
		c = startCluster(t, runArgs...)
		storeArgs = []string{"--data-dir", c.dataDir}
	}
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	// Sealed values, in the order the rotation takes them: the three CA
	// keys, then the TOTP secrets by name (alice, u0, ..., u7).
	var users []*user
	for i := range 8 {
		users = append(users, addUser(t, admin, fmt.Sprintf("u%d", i), "dev"))
	}
	kekPath := filepath.Join(c.dataDir, "kek")
	old, err := seal.ReadKeys(kekPath)
	if err != nil {
		t.Fatal(err)
	}

	// Kill the rotation once it has re-sealed 5 values (CA keys, alice, u0).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("tunnel-gateway"), append([]string{"kek", "rotate", "--settle", "200ms", "--throttle", "400ms"}, storeArgs...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go readLines(bufio.NewScanner(stdout), lines)
	var seen []string
	for line := range lines {
		seen = append(seen, line)
		if line == "Re-sealed 5 values." {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	cmd.Wait()
	for range lines {
	}
	keys, err := seal.ReadKeys(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || string(keys[1]) != string(old[0]) {
		t.Fatalf("after the kill the KEK file holds %d keys; want the new one and the old one (output: %q)", len(keys), seen)
	}
	newID := seal.IDOf(keys[0]).String()

	// The running gateway opens both: u0 was re-sealed, u7 was not.
	users[0].login()
	users[7].login()

	out := mustGateway(t, append([]string{"kek", "rotate", "--settle", "200ms"}, storeArgs...)...)
	if !strings.Contains(out, "Resuming the rotation to key-encryption key "+newID) || !strings.Contains(out, "KEK rotated: key-encryption key ID "+newID) {
		t.Errorf("the rerun printed %q", out)
	}
	keys, err = seal.ReadKeys(kekPath)
	if err != nil || len(keys) != 1 || seal.IDOf(keys[0]).String() != newID {
		t.Fatalf("after the rerun the KEK file holds %d keys (%v); want the new one alone", len(keys), err)
	}
	users[1].login()
	users[6].login()

	// A restart loads the CA keys with the new key alone.
	c.stop()
	c.start(runArgs...)
	admin.login()
	users[2].login()
	if out := admin.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify after the rotation: %s", out)
	}
	events := admin.must("admin", "audit", "ls")
	for _, want := range []string{"kek.rotate_started", "kek.rotated"} {
		if !strings.Contains(events, want) {
			t.Errorf("the audit log has no %s event", want)
		}
	}
}

// TestKEKRotateVault: with Vault Transit as the KEK, kek rotate rotates the
// Transit key and rewraps every sealed value; killed midway, a rerun
// finishes without rotating again, and the gateway keeps working.
func TestKEKRotateVault(t *testing.T) {
	v := vaulttest.Start(t)
	c := initVaultCluster(t, v, "vrot")
	vaultArgs := vaultRunArgs(t, v)
	c.start(append(vaultArgs, "--login-burst", "1000")...)
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	var users []*user
	for i := range 6 {
		users = append(users, addUser(t, admin, fmt.Sprintf("u%d", i), "dev"))
	}
	// The values: the TOTP secrets (alice, u0..u5); the CA keys are in
	// Vault, not sealed values.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("tunnel-gateway"), append([]string{"kek", "rotate", "--data-dir", c.dataDir, "--throttle", "400ms"}, vaultArgs...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go readLines(bufio.NewScanner(stdout), lines)
	var seen []string
	for line := range lines {
		seen = append(seen, line)
		if line == "Re-sealed 3 values." {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	cmd.Wait()
	for range lines {
	}
	if !slices.Contains(seen, "Vault Transit key tunnel-vrot-kek rotated to version 2.") {
		t.Fatalf("kek rotate printed %q; want the Transit key rotated", seen)
	}
	users[0].login()
	users[5].login()
	out := mustGateway(t, append([]string{"kek", "rotate", "--data-dir", c.dataDir}, vaultArgs...)...)
	if !strings.Contains(out, "Resuming: rewrapping values to version 2 of Vault Transit key tunnel-vrot-kek") ||
		!strings.Contains(out, "KEK rotated: Vault Transit key tunnel-vrot-kek is at version 2") {
		t.Errorf("the rerun printed %q", out)
	}
	c.stop()
	c.start(append(vaultArgs, "--login-burst", "1000")...)
	users[1].login()
	admin.login()
	if out := admin.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify after the rotation: %s", out)
	}
}

// TestKEKRotateOneAtATimePostgres: while kek rotate runs on one gateway's
// host, a second run there (the lock beside the KEK file) and one on
// another gateway's host sharing the PostgreSQL store (the claim in the
// store) are refused; once it finishes, the next rotation runs at once.
func TestKEKRotateOneAtATimePostgres(t *testing.T) {
	dbs := newPGDatabases(t, pgtest.Start(t))
	url := dbs.url(dbs.create(t))
	gws := startSharedGateways(t, url, 2, "--login-burst", "1000")
	admin := gws[0].adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	for i := range 4 {
		addUser(t, admin, fmt.Sprintf("u%d", i), "dev")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("tunnel-gateway"), "kek", "rotate", "--settle", "200ms", "--throttle", "400ms", "--data-dir", gws[0].dataDir, "--store", url)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go readLines(bufio.NewScanner(stdout), lines)
	var seen []string
	for line := range lines {
		seen = append(seen, line)
		if line == "Re-sealed 1 values." {
			break
		}
	}
	out, err := gatewayCmd(t, "kek", "rotate", "--settle", "200ms", "--data-dir", gws[0].dataDir, "--store", url)
	if err == nil || !strings.Contains(out, "another kek rotate is running (since ") || !strings.Contains(out, "on this host") {
		t.Errorf("a second kek rotate on the same host: %v, %q; want refused", err, out)
	}
	out, err = gatewayCmd(t, "kek", "rotate", "--settle", "200ms", "--data-dir", gws[1].dataDir, "--store", url)
	if err == nil || !strings.Contains(out, "another kek rotate is running (since ") || !strings.Contains(out, "from another host sharing the store") {
		t.Errorf("a second kek rotate on another host: %v, %q; want refused", err, out)
	}
	for line := range lines {
		seen = append(seen, line)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the first kek rotate: %v (output: %q)", err, seen)
	}
	if !slices.ContainsFunc(seen, func(l string) bool { return strings.HasPrefix(l, "KEK rotated: key-encryption key ID ") }) {
		t.Errorf("the first kek rotate printed %q", seen)
	}
	// Its claim is given up: the next rotation runs at once.
	out = mustGateway(t, "kek", "rotate", "--settle", "200ms", "--data-dir", gws[0].dataDir, "--store", url)
	if !strings.Contains(out, "KEK rotated: key-encryption key ID ") {
		t.Errorf("the next kek rotate printed %q", out)
	}
	admin.login()
}
