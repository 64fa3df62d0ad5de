package gateway

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys/vaulttest"
)

// TestVaultImportResumes: an import stopped after its second value (an
// injected crash) leaves a cluster that starts neither way, and a rerun
// finishes it: every CA key is a Vault reference whose key is the one it
// was (the CA loads from Vault with the same certificates), every other
// value opens with the Transit KEK, and the store names Vault.
func TestVaultImportResumes(t *testing.T) {
	v := vaulttest.Start(t)
	dir := newSealedCluster(t)
	ctx := t.Context()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keysBefore, err := st.CAKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kf, err := seal.NewKeyFileSealer(filepath.Join(dir, KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	before, err := certs.Load(certs.Config{Cluster: "rot"}, keysBefore, kf)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(v.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := VaultImportConfig{DataDir: dir, Vault: VaultConfig{Addr: v.Addr, TokenFile: tokenFile}}
	crash := errors.New("injected crash")
	cfg.afterValue = func(n int) error {
		if n == 2 {
			return crash
		}
		return nil
	}
	if _, err := ImportKeysToVault(ctx, cfg); !errors.Is(err, crash) {
		t.Fatalf("the interrupted import: %v", err)
	}
	vc, err := openVault(ctx, cfg.Vault, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	// Half moved: a gateway given Vault is told to finish the import.
	if _, err := vaultSealer(ctx, st, vc); err == nil || !strings.Contains(err.Error(), "an import begun earlier finishes when run again") {
		t.Errorf("the sealer of a half-moved cluster: %v; want the advice to run vault import again", err)
	}
	cfg.afterValue = nil
	res, err := ImportKeysToVault(ctx, cfg)
	if err != nil {
		t.Fatalf("the rerun: %v", err)
	}
	if res.Already || res.KEK != "tunnel-rot-kek" {
		t.Errorf("the rerun: %+v", res)
	}

	if b, err := st.GetMeta(ctx, store.KeyBackendMeta); err != nil || b != "vault" {
		t.Errorf("key_backend = %q, %v; want vault", b, err)
	}
	refs, err := st.SealedRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := vaultkeys.NewSealer(ctx, vc, res.KEK)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		if ref.Kind == store.SealedCAKey {
			t.Errorf("CA key %s is still sealed in the store", ref.Key)
			continue
		}
		sv, err := st.GetSealed(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sealer.Open(sv, ref.Label); err != nil {
			t.Errorf("%s %s does not open with the Transit KEK: %v", ref.Kind, ref.Key, err)
		}
	}
	keysAfter, err := st.CAKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, err := certs.LoadWith(certs.Config{Cluster: "rot"}, keysAfter, vaultOpener(ctx, vc))
	if err != nil {
		t.Fatalf("the CA does not load from Vault: %v", err)
	}
	if a.Pin() != before.Pin() || len(keysAfter) != len(keysBefore) {
		t.Errorf("CA after the import: pin %s, %d keys; before: %s, %d keys", a.Pin(), len(keysAfter), before.Pin(), len(keysBefore))
	}
	for _, kind := range []store.CertKind{store.CertX509, store.CertSSHUser, store.CertSSHHost} {
		if got := a.Signer(kind); !strings.HasPrefix(got, "vault key tunnel-rot-") {
			t.Errorf("the %s CA signs with %q; want its imported Transit key", kind, got)
		}
	}
	for i := range keysAfter {
		if string(keysAfter[i].Public) != string(keysBefore[i].Public) {
			t.Errorf("CA key %d (%s) changed its public part", i, keysAfter[i].Kind)
		}
		if !strings.HasPrefix(string(keysAfter[i].SealedPrivate), certs.RefPrefix+vaultkeys.RefPrefix+"tunnel-rot-") {
			t.Errorf("CA key %d is %q; want a reference to its Transit key", i, keysAfter[i].SealedPrivate)
		}
	}
}

// TestVaultImportConcurrent: two imports at once (one lock for both): each
// ends moved, refused by the other's lock, or finding nothing to move, and
// every CA key is imported once and referenced by the store.
func TestVaultImportConcurrent(t *testing.T) {
	v := vaulttest.Start(t)
	dir := newSealedCluster(t)
	ctx := t.Context()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(v.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := VaultImportConfig{DataDir: dir, Vault: VaultConfig{Addr: v.Addr, TokenFile: tokenFile}}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := ImportKeysToVault(ctx, cfg)
			errs <- err
		}()
	}
	moved := 0
	for range 2 {
		err := <-errs
		switch {
		case err == nil:
			moved++
		case strings.Contains(err.Error(), "is running"):
		default:
			t.Errorf("an import beside another: %v", err)
		}
	}
	if moved == 0 {
		t.Fatal("neither import moved the keys")
	}
	res, err := ImportKeysToVault(ctx, cfg)
	if err != nil || !res.Already {
		t.Fatalf("a third import: %+v, %v; want nothing left to move", res, err)
	}
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := st.CAKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(string(k.SealedPrivate), certs.RefPrefix+vaultkeys.RefPrefix) {
			t.Errorf("CA key %s is not a Vault reference after the imports", k.Kind)
		}
	}
	list, err := v.Client(t).Logical().List("transit/keys")
	if err != nil || list == nil {
		t.Fatalf("list Transit keys: %v", err)
	}
	if n := len(list.Data["keys"].([]any)); n != len(keys)+1 {
		t.Errorf("Vault holds %d Transit keys; want %d CA keys and the KEK", n, len(keys))
	}
}
