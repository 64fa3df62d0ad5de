package gateway

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// newSealedCluster makes a cluster with an admin (a TOTP secret) and a
// saved recording, and returns its data directory.
func newSealedCluster(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "gw")
	if _, err := Init(ctx, InitConfig{DataDir: dir, Cluster: "rot", Admin: "alice", AdminPassword: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkOpensAll opens every sealed value of the cluster in dir with its KEK
// file, loads the CA, and returns the IDs of the keys that sealed them.
func checkOpensAll(t *testing.T, dir string) map[seal.KeyID]int {
	t.Helper()
	ctx := t.Context()
	kf, err := seal.NewKeyFileSealer(filepath.Join(dir, KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	refs, err := st.SealedRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) < 4 {
		t.Fatalf("only %d sealed values: %v", len(refs), refs)
	}
	ids := map[seal.KeyID]int{}
	for _, ref := range refs {
		v, err := st.GetSealed(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kf.Open(v, ref.Label); err != nil {
			t.Errorf("%s %s does not open: %v", ref.Kind, ref.Key, err)
		}
		id, _ := seal.SealedKeyID(v)
		ids[id]++
	}
	keys, err := st.CAKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Load(certs.Config{Cluster: "rot"}, keys, kf); err != nil {
		t.Errorf("the CA does not load: %v", err)
	}
	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Verify(evs, head); err != nil {
		t.Errorf("audit log: %v", err)
	}
	return ids
}

// TestRotateKEKInterrupted stops a rotation after one value (an injected
// crash), checks that everything still opens with the KEK file as left,
// and that a rerun finishes: every value under the new key alone.
func TestRotateKEKInterrupted(t *testing.T) {
	ctx := t.Context()
	dir := newSealedCluster(t)
	old, err := seal.ReadKeys(filepath.Join(dir, KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	oldID := seal.IDOf(old[0])
	crash := errors.New("injected crash")
	_, err = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1, afterValue: func(n int) error {
		if n == 2 {
			return crash
		}
		return nil
	}})
	if !errors.Is(err, crash) {
		t.Fatalf("RotateKEK with a crash: %v", err)
	}
	keys, err := seal.ReadKeys(filepath.Join(dir, KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !bytes.Equal(keys[1], old[0]) {
		t.Fatalf("after the crash the KEK file holds %d keys; want the new and the old", len(keys))
	}
	newID := seal.IDOf(keys[0])
	ids := checkOpensAll(t, dir)
	if ids[newID] != 2 || ids[oldID] == 0 {
		t.Errorf("after the crash: values by key %v; want 2 under the new key and the rest under the old", ids)
	}

	res, err := RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1})
	if err != nil {
		t.Fatalf("RotateKEK rerun: %v", err)
	}
	if !res.Resumed || res.NewKey != newID.String() || res.Resealed == 0 {
		t.Errorf("rerun = %+v; want resumed to %s", res, newID)
	}
	keys, err = seal.ReadKeys(filepath.Join(dir, KEKFile))
	if err != nil || len(keys) != 1 || seal.IDOf(keys[0]) != newID {
		t.Fatalf("after the rerun the KEK file holds %d keys (%v); want the new one alone", len(keys), err)
	}
	ids = checkOpensAll(t, dir)
	if len(ids) != 1 || ids[newID] == 0 {
		t.Errorf("after the rerun: values by key %v; want all under %s", ids, newID)
	}

	// A second rotation starts afresh, and the gateway starts after it.
	res2, err := RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1})
	if err != nil || res2.Resumed || res2.NewKey == newID.String() {
		t.Fatalf("second rotation = %+v, %v", res2, err)
	}
	checkOpensAll(t, dir)
	g, err := New(ctx, Config{DataDir: dir, APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("New after the rotations: %v", err)
	}
	g.Close(context.Background())
}

// TestRotateKEKRefusesWrongKey: a KEK file that does not open the store is
// not rotated (the store's values would be lost).
func TestRotateKEKRefusesWrongKey(t *testing.T) {
	dir := newSealedCluster(t)
	other := filepath.Join(t.TempDir(), "kek")
	k, _ := seal.NewKey(nil)
	if err := seal.WriteKeyFile(other, [][]byte{k}); err != nil {
		t.Fatal(err)
	}
	_, err := RotateKEK(t.Context(), KEKRotateConfig{DataDir: dir, KEKFile: other, Settle: 1})
	if err == nil || !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("RotateKEK with another cluster's KEK: %v; want refused", err)
	}
	if keys, _ := seal.ReadKeys(other); len(keys) != 1 {
		t.Errorf("the refused rotation changed the KEK file")
	}
}

// setTOTP stores alice's TOTP secret sealed by s, as a gateway would.
func setTOTP(t *testing.T, dir string, s seal.Sealer) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := s.Seal([]byte("JBSWY3DPEHPK3PXP"), "totp/alice")
	if err != nil {
		t.Fatal(err)
	}
	ev := audit.Event{Time: time.Now(), Type: "user.mfa_reset", Actor: "test", Subject: "alice", Outcome: audit.Success}
	if err := st.ResetMFA(ctx, "alice", v, ev); err != nil {
		t.Fatal(err)
	}
}

// TestRotateKEKOneAtATime: while a rotation runs, a second one on the same
// host (the flock beside the KEK file) and one with another copy of the
// KEK file on the same store (another host: the claim in the store) are
// refused; the first finishes, and releases the store for the next one.
func TestRotateKEKOneAtATime(t *testing.T) {
	ctx := t.Context()
	dir := newSealedCluster(t)
	kek := filepath.Join(dir, KEKFile)
	otherHost := filepath.Join(t.TempDir(), "kek")
	b, err := os.ReadFile(kek)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherHost, b, 0o600); err != nil {
		t.Fatal(err)
	}
	reached, proceed := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, firstErr = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1, afterValue: func(n int) error {
			if n == 1 {
				close(reached)
				<-proceed
			}
			return nil
		}})
	}()
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the first rotation did not re-seal a value")
	}
	_, err = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1})
	if err == nil || !strings.Contains(err.Error(), "another kek rotate is running (since ") || !strings.Contains(err.Error(), "on this host") {
		t.Errorf("a second rotation on this host: %v; want refused", err)
	}
	_, err = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, KEKFile: otherHost, Settle: 1})
	if err == nil || !strings.Contains(err.Error(), "another kek rotate is running (since ") {
		t.Errorf("a second rotation on another host: %v; want refused", err)
	}
	if keys, err := seal.ReadKeys(otherHost); err != nil || len(keys) != 1 {
		t.Errorf("the refused rotation changed the other host's KEK file: %d keys, %v", len(keys), err)
	}
	close(proceed)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("the first rotation: %v", firstErr)
	}
	ids := checkOpensAll(t, dir)
	if len(ids) != 1 {
		t.Errorf("values by key %v; want all under the new key", ids)
	}
	// Released: the next rotation runs.
	if _, err := RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1}); err != nil {
		t.Fatalf("a rotation after the first: %v", err)
	}
	checkOpensAll(t, dir)
}

// TestRotateKEKPutsOldKeyBack: a value sealed with the old key by a
// gateway that had not read the new file, between the last pass and the
// drop, puts the old key back instead of being lost; a rerun finishes.
func TestRotateKEKPutsOldKeyBack(t *testing.T) {
	ctx := t.Context()
	dir := newSealedCluster(t)
	kek := filepath.Join(dir, KEKFile)
	old, err := seal.ReadKeys(kek)
	if err != nil {
		t.Fatal(err)
	}
	oldRing, err := seal.NewKeyring(old, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1, beforeDrop: func() error {
		setTOTP(t, dir, oldRing)
		return nil
	}})
	if err == nil || !strings.Contains(err.Error(), "totp alice was sealed with an old key while kek rotate dropped it") {
		t.Fatalf("RotateKEK with a value sealed under the old key at the end: %v; want the old key put back", err)
	}
	keys, err := seal.ReadKeys(kek)
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[1], old[0]) {
		t.Fatalf("the KEK file holds %d keys (%v); want the new and the old", len(keys), err)
	}
	checkOpensAll(t, dir)
	res, err := RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1})
	if err != nil || !res.Resumed {
		t.Fatalf("rerun: %+v, %v", res, err)
	}
	if ids := checkOpensAll(t, dir); len(ids) != 1 {
		t.Errorf("values by key %v; want all under the new key", ids)
	}
}

// TestRotateKEKUnopenable: a value no key opens stops the rotation with
// the way out; --skip leaves it and the rotation finishes.
func TestRotateKEKUnopenable(t *testing.T) {
	ctx := t.Context()
	dir := newSealedCluster(t)
	lost, _ := seal.NewKey(nil)
	lostRing, err := seal.NewKeyring([][]byte{lost}, nil)
	if err != nil {
		t.Fatal(err)
	}
	setTOTP(t, dir, lostRing)
	_, err = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1})
	if err == nil || !strings.Contains(err.Error(), "re-seal totp alice: ") ||
		!strings.Contains(err.Error(), "reset that user's TOTP with tunnel admin users reset-mfa alice (or leave the value unopenable for good with --skip totp/alice), then run kek rotate again") {
		t.Fatalf("RotateKEK with an unopenable TOTP secret: %v; want the way out", err)
	}
	var out bytes.Buffer
	res, err := RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1, Skip: []string{"totp/alice"}, Progress: &out})
	if err != nil || !res.Resumed {
		t.Fatalf("RotateKEK --skip totp/alice: %+v, %v", res, err)
	}
	if !strings.Contains(out.String(), "Skipped totp/alice (--skip)") {
		t.Errorf("progress: %q", out.String())
	}
	if keys, err := seal.ReadKeys(filepath.Join(dir, KEKFile)); err != nil || len(keys) != 1 || seal.IDOf(keys[0]).String() != res.NewKey {
		t.Errorf("the KEK file holds %d keys (%v); want the new one alone", len(keys), err)
	}
}

// TestRotateKEKFileChanged: a KEK file written by someone else during the
// rotation is not overwritten.
func TestRotateKEKFileChanged(t *testing.T) {
	dir := newSealedCluster(t)
	kek := filepath.Join(dir, KEKFile)
	var theirs [][]byte
	_, err := RotateKEK(t.Context(), KEKRotateConfig{DataDir: dir, Settle: 1, beforeDrop: func() error {
		keys, err := seal.ReadKeys(kek)
		if err != nil {
			return err
		}
		k, _ := seal.NewKey(nil)
		theirs = append([][]byte{k}, keys...)
		return seal.WriteKeyFile(kek, theirs)
	}})
	if err == nil || !strings.Contains(err.Error(), "changed while kek rotate ran (another process wrote it), so kek rotate did not write it") {
		t.Fatalf("RotateKEK with the file changed under it: %v; want refused", err)
	}
	if keys, _ := seal.ReadKeys(kek); !sameKeys(keys, theirs) {
		t.Errorf("the other writer's file was overwritten")
	}
}

// TestRotateKEKKeepsOwner: run as root on the KEK file of a gateway that
// runs as another user, the rotation leaves the file that user's.
func TestRotateKEKKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := newSealedCluster(t)
	kek := filepath.Join(dir, KEKFile)
	if err := os.Chown(kek, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := RotateKEK(t.Context(), KEKRotateConfig{DataDir: dir, Settle: 1}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(kek)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("after the rotation the KEK file belongs to %d:%d; want 65534:65534", st.Uid, st.Gid)
	}
}

// TestRotateKEKRenewsClaim: a rotation that runs longer than its claim's
// lease renews it, so that another host still cannot start one.
func TestRotateKEKRenewsClaim(t *testing.T) {
	ctx := t.Context()
	dir := newSealedCluster(t)
	otherHost := filepath.Join(t.TempDir(), "kek")
	b, err := os.ReadFile(filepath.Join(dir, KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherHost, b, 0o600); err != nil {
		t.Fatal(err)
	}
	const lease = 2 * time.Second
	reached, proceed := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Held at step 1, before any value is re-sealed: another host's
		// copy of the KEK file still opens everything.
		_, firstErr = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, Settle: 1, lease: lease, Prepare: true,
			Progress: writerFunc(func(p []byte) (int, error) {
				if bytes.HasPrefix(p, []byte("New key-encryption key")) {
					close(reached)
					<-proceed
				}
				return len(p), nil
			})})
	}()
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the first rotation did not add its key")
	}
	time.Sleep(5 * lease / 2) // renewals every lease/3; without them the claim expires
	_, err = RotateKEK(ctx, KEKRotateConfig{DataDir: dir, KEKFile: otherHost, Settle: 1, lease: lease})
	if err == nil || !strings.Contains(err.Error(), "another kek rotate is running (since ") {
		t.Errorf("a rotation on another host after %s: %v; want refused", 5*lease/2, err)
	}
	close(proceed)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("the first rotation: %v", firstErr)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
