package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/pgstore"
	"github.com/tunnelhq/tunnel/pkg/store/storetest"
)

// ageIdentity makes an age key pair and writes the identity to a file.
func ageIdentity(t *testing.T) (recipient, identityFile string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "age-key.txt")
	if err := os.WriteFile(f, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String(), f
}

// gatewayCmd runs tunnel-gateway and returns its combined output.
func gatewayCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin("tunnel-gateway"), args...).CombinedOutput()
	return string(out), err
}

func mustGateway(t *testing.T, args ...string) string {
	t.Helper()
	out, err := gatewayCmd(t, args...)
	if err != nil {
		t.Fatalf("tunnel-gateway %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestBackupRestoreSQLite and TestBackupRestorePostgres back up a live
// gateway under load (logins, streams), restore the backup into a fresh
// data directory or database, and run a gateway on it: users log in, the
// agents reconnect, the audit log verifies across the restore; a tampered
// backup and the wrong identity are refused.
func TestBackupRestoreSQLite(t *testing.T) { testBackupRestore(t, false) }

func TestBackupRestorePostgres(t *testing.T) { testBackupRestore(t, true) }

func testBackupRestore(t *testing.T, pg bool) {
	var c *cluster
	var storeArgs []string
	var dbs *pgDatabases
	if pg {
		dbs = newPGDatabases(t, pgtest.Start(t))
		url := dbs.url(dbs.create(t))
		c = startSharedGateways(t, url, 1, "--login-burst", "1000")[0]
		storeArgs = []string{"--store", url}
	} else {
		c = startCluster(t, "--login-burst", "1000")
		storeArgs = []string{"--data-dir", c.dataDir}
	}
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	bob := addUser(t, admin, "bob", "dev")
	bob.login()

	echo := serve(t, echoHandler)
	db := c.startAgent("db-1", admin.token("db-1"), fmt.Sprintf("expose:\n  - {name: echo, address: %s}\n", echo.addr()))
	echoAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := c.startAgent("app-1", admin.token("app-1"), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: db-1/echo}\n", echoAddr))
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	admin.waitOnline("db-1", true, 30*time.Second)
	admin.waitOnline("app-1", true, 30*time.Second)
	dialRetry(t, echoAddr, echoOnce, 30*time.Second)

	// Load: streams through the tunnel, failed logins and admin calls,
	// while the backups are taken.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var streams, logins atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				conn, err := net.DialTimeout("tcp", echoAddr, 10*time.Second)
				if err == nil {
					if echoOnce(conn) == nil {
						streams.Add(1)
					}
					conn.Close()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		mallory := c.newUserHandle("mallory", "not the password", newOTPSource("JBSWY3DPEHPK3PXP"))
		for ctx.Err() == nil {
			mallory.run("login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "mallory", "--password-file", mallory.pwPath, "--otp", "123456")
			admin.run("admin", "users", "ls")
			logins.Add(1)
		}
	}()
	recipient, identity := ageIdentity(t)
	dir := t.TempDir()
	backupFile := filepath.Join(dir, "cluster.tunnel-backup")
	time.Sleep(time.Second)
	for i := range 2 {
		out := mustGateway(t, append([]string{"backup", "--out", backupFile, "--recipient", recipient}, storeArgs...)...)
		if !strings.Contains(out, "Backup of cluster \"itest\"") {
			t.Errorf("backup %d printed %q", i, out)
		}
	}
	stop()
	wg.Wait()
	if streams.Load() == 0 || logins.Load() == 0 {
		t.Fatalf("the load made %d streams and %d login rounds; want some of each", streams.Load(), logins.Load())
	}
	fi, err := os.Stat(backupFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v; want mode 0600", err, fi)
	}
	kekBytes, err := os.ReadFile(filepath.Join(c.dataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := seal.ReadKeys(filepath.Join(c.dataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	kekID := seal.IDOf(keys[0]).String()
	data, _ := os.ReadFile(backupFile)
	if strings.Contains(string(data), strings.TrimSpace(string(kekBytes))) {
		t.Fatalf("the backup holds the KEK in the clear")
	}

	newDir := filepath.Join(t.TempDir(), "restored")
	restoreArgs := []string{"restore", "--data-dir", newDir}
	var runArgs []string
	if pg {
		url2 := dbs.url(dbs.create(t))
		restoreArgs = append(restoreArgs, "--store", url2)
		runArgs = []string{"--store", url2, "--id", "gw-restored"}
	}

	// A flipped byte, a truncated file and the wrong identity are refused,
	// and leave nothing behind.
	tampered := filepath.Join(dir, "tampered")
	b := []byte(string(data))
	b[len(b)/2] ^= 0x10
	os.WriteFile(tampered, b, 0o600)
	out, err := gatewayCmd(t, append(restoreArgs, "--in", tampered, "--identity", identity)...)
	if err == nil || !strings.Contains(out, tampered+" is damaged (altered or truncated) and was not restored; nothing was written: use another copy of the backup") {
		t.Errorf("restore of a tampered backup: %v\n%s", err, out)
	}
	os.WriteFile(tampered, data[:len(data)-100], 0o600)
	out, err = gatewayCmd(t, append(restoreArgs, "--in", tampered, "--identity", identity)...)
	if err == nil || !strings.Contains(out, "is damaged (altered or truncated)") {
		t.Errorf("restore of a truncated backup: %v\n%s", err, out)
	}
	_, otherIdentity := ageIdentity(t)
	out, err = gatewayCmd(t, append(restoreArgs, "--in", backupFile, "--identity", otherIdentity)...)
	if err == nil || !strings.Contains(out, backupFile+" cannot be decrypted with this identity: it is encrypted to other age recipients") {
		t.Errorf("restore with the wrong identity: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(newDir, "gateway.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused restore left a store: %v", err)
	}

	// The restore says which KEK to bring; a gateway started without it
	// says so too.
	out = mustGateway(t, append(restoreArgs, "--in", backupFile, "--identity", identity)...)
	wantKEK := "the backup's secrets are sealed with key-encryption key ID " + kekID + ": copy the KEK file from the original gateway to " + filepath.Join(newDir, "kek")
	if !strings.Contains(out, "Restored cluster \"itest\"") || !strings.Contains(out, wantKEK) {
		t.Errorf("restore printed %q; want it to say %q", out, wantKEK)
	}
	out, err = gatewayCmd(t, append([]string{"run", "--data-dir", newDir, "--api-addr", "127.0.0.1:0"}, runArgs...)...)
	if err == nil || !strings.Contains(out, wantKEK) {
		t.Errorf("run without the KEK: %v\n%s\nwant %q", err, out, wantKEK)
	}
	// Only into an empty target.
	out, err = gatewayCmd(t, append(restoreArgs, "--in", backupFile, "--identity", identity)...)
	if err == nil || !strings.Contains(out, "restore only into an empty") {
		t.Errorf("restore over the restored cluster: %v\n%s", err, out)
	}

	// The old gateway goes; one on the restored store takes its place.
	c.stop()
	if err := os.WriteFile(filepath.Join(newDir, "kek"), kekBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := &cluster{t: t, dataDir: newDir, name: c.name, pin: c.pin, admin: c.admin, adminPW: c.adminPW, adminOTP: c.adminOTP}
	c2.start(append([]string{"--login-burst", "1000"}, runArgs...)...)
	admin2 := c2.newUserHandle(admin.name, admin.pw, admin.otp)
	admin2.login()
	bob2 := c2.newUserHandle("bob", bob.pw, bob.otp)
	bob2.login()
	for _, a := range []*agentProc{db, app} {
		a.stop()
		a.c = c2
		a.start("")
	}
	admin2.waitOnline("db-1", true, 30*time.Second)
	admin2.waitOnline("app-1", true, 30*time.Second)
	dialRetry(t, echoAddr, echoOnce, 30*time.Second)
	if out := admin2.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify after the restore: %s", out)
	}
	events := admin2.must("admin", "audit", "ls")
	for _, want := range []string{"backup.created", "backup.restored"} {
		if !strings.Contains(events, want) {
			t.Errorf("the restored audit log has no %s event", want)
		}
	}
}

// TestScheduledBackups runs a gateway with --backup-every: backups appear
// in --backup-dir, each audited, the oldest pruned, and the newest
// restores.
func TestScheduledBackups(t *testing.T) {
	recipient, identity := ageIdentity(t)
	bdir := filepath.Join(t.TempDir(), "backups")
	c := startCluster(t, "--backup-dir", bdir, "--backup-every", "1s", "--backup-keep", "2", "--backup-recipient", recipient)
	admin := c.adminUser()
	admin.login()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if strings.Count(admin.must("admin", "audit", "ls"), "backup.created") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 4 scheduled backups audited in 60 s\n%s", c.log.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.stop()
	ents, err := os.ReadDir(bdir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 {
		t.Fatalf("backup dir holds %v; want the 2 newest", names)
	}
	newDir := filepath.Join(t.TempDir(), "restored")
	out := mustGateway(t, "restore", "--data-dir", newDir, "--in", filepath.Join(bdir, names[1]), "--identity", identity)
	if !strings.Contains(out, "Restored cluster") {
		t.Errorf("restore printed %q", out)
	}
}

// readLines sends the lines of r on a channel until r ends.
func readLines(r *bufio.Scanner, ch chan<- string) {
	for r.Scan() {
		ch <- r.Text()
	}
	close(ch)
}

// TestPGSnapshotRestore runs the snapshot conformance test of
// pkg/store/storetest against a real PostgreSQL: a snapshot of a store in
// use restores whole into a fresh database, and half of one is refused.
func TestPGSnapshotRestore(t *testing.T) {
	dbs := newPGDatabases(t, pgtest.Start(t))
	storetest.RunRestore(t, func(t *testing.T) store.Store {
		return openPGStore(t, dbs.url(dbs.create(t)))
	}, func(t *testing.T, r io.Reader) (store.Store, error) {
		url := dbs.url(dbs.create(t))
		if err := pgstore.Restore(t.Context(), url, pgstore.Options{}, r); err != nil {
			// Nothing was written: the database is still empty.
			s := openPGStore(t, url)
			if _, gerr := s.GetMeta(t.Context(), "cluster"); gerr == nil {
				t.Errorf("a failed restore left a cluster behind")
			}
			return nil, err
		}
		return openPGStore(t, url), nil
	})
	// Only into an empty database.
	url := dbs.url(dbs.create(t))
	s := openPGStore(t, url)
	if err := s.Initialize(t.Context(), map[string]string{"cluster": "x"}, nil, audit.Event{Time: time.Now(), Type: audit.ClusterInit, Actor: "t", Outcome: audit.Success}); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Restore(t.Context(), url, pgstore.Options{}, strings.NewReader("")); !errors.Is(err, pgstore.ErrNotEmpty) {
		t.Errorf("restore into a database with a cluster: %v; want ErrNotEmpty", err)
	}
}

// TestScheduledBackupsElected runs two gateways sharing a PostgreSQL store,
// both with a 2 s backup schedule: the store elects one per period, so no
// two backups are less than a period apart, whoever wrote them.
func TestScheduledBackupsElected(t *testing.T) {
	recipient, _ := ageIdentity(t)
	dbs := newPGDatabases(t, pgtest.Start(t))
	url := dbs.url(dbs.create(t))
	base := t.TempDir()
	const every = 2 * time.Second
	gws := initSharedGateways(t, url, 2)
	for i, c := range gws {
		ip := fmt.Sprintf("127.0.0.1%d", i+1)
		c.start("--store", url, "--id", fmt.Sprintf("gw-%d", i+1), "--api-addr", ip+":0", "--name", ip,
			"--backup-dir", filepath.Join(base, fmt.Sprintf("b%d", i+1)), "--backup-every", every.String(), "--backup-recipient", recipient)
	}
	admin := gws[0].adminUser()
	admin.login()
	type ev struct {
		Type    string            `json:"type"`
		Time    time.Time         `json:"time"`
		Outcome string            `json:"outcome"`
		Details map[string]string `json:"details"`
	}
	var backups []ev
	deadline := time.Now().Add(90 * time.Second)
	for len(backups) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d scheduled backups audited in 90 s", len(backups))
		}
		time.Sleep(time.Second)
		var evs []ev
		if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
			t.Fatal(err)
		}
		backups = backups[:0]
		for _, e := range evs {
			if e.Type == "backup.created" && e.Outcome == "success" {
				backups = append(backups, e)
			}
		}
	}
	at := func(e ev) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, e.Details["scheduled_at"])
		if err != nil {
			t.Fatalf("backup event without scheduled_at: %v", e.Details)
		}
		return tm
	}
	for i := 1; i < len(backups); i++ {
		if gap := at(backups[i]).Sub(at(backups[i-1])); gap < every-10*time.Millisecond {
			t.Errorf("backups %d (by %s) and %d (by %s) are %s apart; want at least a period (%s)",
				i-1, backups[i-1].Details["gateway"], i, backups[i].Details["gateway"], gap, every)
		}
	}
	files := 0
	for i := range gws {
		ents, _ := os.ReadDir(filepath.Join(base, fmt.Sprintf("b%d", i+1)))
		files += len(ents)
	}
	if files < len(backups) {
		t.Errorf("%d backup files for %d audited backups", files, len(backups))
	}
}
