package gateway

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
)

func ageKey(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestBackupRestore backs a cluster up, refuses the wrong identity, a
// flipped byte and a non-empty target, restores it into a fresh data
// directory, and checks what a gateway says without, then with, the KEK.
func TestBackupRestore(t *testing.T) {
	ctx := t.Context()
	dir := newSealedCluster(t)
	id := ageKey(t)
	out := filepath.Join(t.TempDir(), "b.tunnel-backup")
	res, err := Backup(ctx, BackupConfig{DataDir: dir, Out: out, Recipients: []age.Recipient{id.Recipient()}})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, fi.Mode())
	}
	kek, _ := seal.ReadKeys(filepath.Join(dir, KEKFile))
	if res.Header.Cluster != "rot" || res.Header.StoreKind != store.KindSQLite || len(res.Header.KEK.KeyIDs) != 1 ||
		res.Header.KEK.KeyIDs[0] != seal.IDOf(kek[0]).String() {
		t.Errorf("header = %+v", res.Header)
	}
	// Strings long enough not to turn up in ciphertext by chance (the
	// cluster's name, "rot", did in one CI run in a few hundred).
	data, _ := os.ReadFile(out)
	if !strings.HasPrefix(string(data), "age-encryption.org/v1\n") || strings.Contains(string(data), "SQLite format 3") ||
		strings.Contains(string(data), "CREATE TABLE") || strings.Contains(string(data), "BEGIN CERTIFICATE") {
		t.Errorf("the backup is not an age file, or holds plaintext of the store")
	}

	restoreTo := func(in string, ident *age.X25519Identity) (string, *RestoreResult, error) {
		d := filepath.Join(t.TempDir(), "restored")
		r, err := Restore(ctx, RestoreConfig{In: in, Identities: []age.Identity{ident}, DataDir: d})
		return d, r, err
	}
	if _, _, err := restoreTo(out, ageKey(t)); err == nil || !strings.Contains(err.Error(), "cannot be decrypted with this identity") {
		t.Errorf("restore with another identity: %v", err)
	}
	tampered := filepath.Join(t.TempDir(), "t")
	b := []byte(string(data))
	b[len(b)/2] ^= 1
	os.WriteFile(tampered, b, 0o600)
	if d, _, err := restoreTo(tampered, id); err == nil || !strings.Contains(err.Error(), "is damaged (altered or truncated) and was not restored") {
		t.Errorf("restore of a tampered backup: %v", err)
	} else if _, serr := os.Stat(filepath.Join(d, DBFile)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("the refused restore left a store behind")
	}
	os.WriteFile(tampered, data[:len(data)-30], 0o600)
	if _, _, err := restoreTo(tampered, id); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Errorf("restore of a truncated backup: %v", err)
	}
	if _, err := Restore(ctx, RestoreConfig{In: out, Identities: []age.Identity{id}, DataDir: dir}); !errors.Is(err, ErrRestoreNotEmpty) ||
		!strings.Contains(err.Error(), "restore only into an empty data directory") {
		t.Errorf("restore over the cluster: %v", err)
	}

	d, rr, err := restoreTo(out, id)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	want := "the backup's secrets are sealed with key-encryption key ID " + seal.IDOf(kek[0]).String() + ": copy the KEK file from the original gateway to " + filepath.Join(d, KEKFile)
	if rr.KEKMissing != want {
		t.Errorf("KEKMissing = %q; want %q", rr.KEKMissing, want)
	}
	_, err = New(ctx, Config{DataDir: d, APIAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("New without the KEK: %v; want %q", err, want)
	}
	// A KEK of another cluster: the error names the key needed.
	other, _ := seal.NewKey(nil)
	seal.WriteKeyFile(filepath.Join(d, KEKFile), [][]byte{other})
	_, err = New(ctx, Config{DataDir: d, APIAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "sealed with key-encryption key ID "+seal.IDOf(kek[0]).String()) {
		t.Errorf("New with another KEK: %v", err)
	}
	seal.WriteKeyFile(filepath.Join(d, KEKFile), kek)
	g, err := New(ctx, Config{DataDir: d, APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("New with the KEK: %v", err)
	}
	g.Close(context.Background())
	ids := checkOpensAll(t, d)
	if len(ids) != 1 {
		t.Errorf("restored values by key: %v", ids)
	}
}

// TestBackupSchedule runs the schedule of a gateway: backups appear, each
// audited, and only the newest are kept.
func TestBackupSchedule(t *testing.T) {
	dir := newSealedCluster(t)
	bdir := filepath.Join(t.TempDir(), "backups")
	id := ageKey(t)
	g, err := New(t.Context(), Config{DataDir: dir, APIAddr: "127.0.0.1:0", Log: slog.New(slog.DiscardHandler),
		Backup: BackupSchedule{Dir: bdir, Every: 50 * time.Millisecond, Keep: 2, Recipients: []string{id.Recipient().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.StartBackups(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := g.store.ListAudit(t.Context(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Type == AuditBackupCreated && e.Outcome == audit.Success {
				n++
			}
		}
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backups audited in 30 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if files := backupFiles(bdir); len(files) != 2 {
		t.Errorf("backup dir holds %v; want the 2 newest", files)
	}

	// A schedule without a recipient is refused at start.
	g2, err := New(t.Context(), Config{DataDir: dir, APIAddr: "127.0.0.1:0", Backup: BackupSchedule{Dir: bdir}})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close(context.Background())
	if err := g2.StartBackups(); err == nil || !strings.Contains(err.Error(), "no recipient") {
		t.Errorf("StartBackups without recipients: %v", err)
	}
}
