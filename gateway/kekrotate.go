package gateway

// KEK rotation (tunnel-gateway kek rotate): every sealed value of the store
// re-sealed under a new key-encryption key, while the gateways run.
//
// With a KEK file, the steps are, each one safe to interrupt:
//
//  1. A new key is written at the head of the KEK file, the old one kept
//     after it (atomically: temporary file, fsync, rename). Gateways reload
//     the file when it changes (pkg/seal.KeyFile): they seal with the new
//     key and open with either from now on.
//  2. Every sealed value not yet under the new key is opened and sealed
//     again, and replaced only if it did not change meanwhile
//     (store.SealedStore.ReplaceSealed). Passes repeat until one finds
//     nothing left to re-seal.
//  3. The old key is dropped from the file, then the store is scanned
//     again (after Settle): if a gateway sealed a value with the old key
//     meanwhile, the old key is put back and the rotation stops, to be run
//     again.
//
// A gateway that cannot read the rewritten file refuses to seal
// (pkg/seal.KeyFile.Seal) rather than seal with a key about to be dropped,
// and the file keeps its owner (seal.WriteKeyFile), so that a gateway
// running as another user than kek rotate still reads it.
//
// One rotation runs at a time (kekrotate_lock.go): a flock beside the KEK
// file, and a claim in the store for gateways on other hosts. The file is
// read under the lock, and each write checks it did not change since.
//
// A rerun after an interruption finds the file with two keys and resumes
// at step 2: nothing is lost, since until step 3 both keys are in the file.
//
// With Vault Transit, the Transit key is rotated (Vault keeps the old
// versions for decryption) and every value is rewrapped to the latest
// version.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
)

// KEKRotateConfig says which cluster's KEK to rotate.
type KEKRotateConfig struct {
	DataDir       string
	KEKFile       string // default DataDir/kek
	Store         string
	StoreInsecure bool
	Vault         VaultConfig
	// Prepare only adds the new key to the file (step 1), for copying the
	// file to the other gateways before the values are re-sealed.
	Prepare bool
	// Settle is how long to wait after step 1 for seals in flight on the
	// running gateways (made with the old key) to reach the store; zero
	// means 2 s.
	Settle time.Duration
	// Throttle is a pause after each value re-sealed, to spread the load
	// on a busy store.
	Throttle time.Duration
	// Progress, if set, receives a line per step.
	Progress io.Writer
	Clock    func() time.Time

	// Skip names sealed values ("totp/carol", "recording/ID", "ca/ID") to
	// leave as they are: values that cannot be opened any more, which
	// would otherwise stop the rotation for good. They stay unopenable.
	Skip []string

	// command names the command for the advice of refusals ("kek
	// rotate" if empty).
	command string

	// lease, in tests, replaces kekRotateLease.
	lease time.Duration
	// beforeDrop, in tests, runs just before step 3 writes the file.
	beforeDrop func() error
	// afterValue, in tests, runs after each value is re-sealed; an error
	// stops the rotation there (an injected crash).
	afterValue func(n int) error
}

// KEKRotateResult reports a rotation.
type KEKRotateResult struct {
	Backend  string   `json:"backend"` // "file" or "vault"
	OldKeys  []string `json:"old_key_ids,omitempty"`
	NewKey   string   `json:"new_key_id,omitempty"`
	Resumed  bool     `json:"resumed,omitempty"`
	Prepared bool     `json:"prepared_only,omitempty"`
	Resealed int      `json:"resealed"`
	// VaultKey and VaultVersion name the Transit key and its new version.
	VaultKey     string `json:"vault_key,omitempty"`
	VaultVersion int    `json:"vault_version,omitempty"`
}

// RotateKEK rotates the cluster's key-encryption key.
func RotateKEK(ctx context.Context, cfg KEKRotateConfig) (*KEKRotateResult, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Settle == 0 {
		cfg.Settle = 2 * time.Second
	}
	kekFile, err := kekFilePath(cfg.DataDir, cfg.KEKFile)
	if err != nil {
		return nil, err
	}
	cfg.KEKFile = kekFile
	st, ss, err := openSealedStore(ctx, cfg.DataDir, cfg.Store, cfg.StoreInsecure)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	backend, _ := st.GetMeta(ctx, "key_backend")
	if backend == "vault" || cfg.Vault.Addr != "" {
		if backend != "vault" {
			return nil, errors.New("this cluster keeps its KEK in a file, not in Vault: drop --vault-addr")
		}
		// The lock beside the KEK file's place, if the directory is there,
		// lets a rerun on this host take over from a run that was killed.
		lockPath := cfg.KEKFile + ".lock"
		if _, err := os.Stat(filepath.Dir(cfg.KEKFile)); err != nil {
			lockPath = ""
		}
		lk, err := lockRotation(ctx, &cfg, st, lockPath)
		if err != nil {
			return nil, err
		}
		defer lk.release()
		res, err := rotateVault(lk.ctx, cfg, st, ss)
		return res, lk.or(err)
	}
	if _, err := os.Stat(filepath.Dir(cfg.KEKFile)); err != nil {
		return nil, fmt.Errorf("the directory of the KEK file: %w", err)
	}
	lk, err := lockRotation(ctx, &cfg, st, cfg.KEKFile+".lock")
	if err != nil {
		return nil, err
	}
	defer lk.release()
	res, err := rotateFile(lk.ctx, cfg, st, ss)
	return res, lk.or(err)
}

// kekFilePath is the KEK file a command works on: kekFile, else the one
// in dataDir.
func kekFilePath(dataDir, kekFile string) (string, error) {
	if kekFile != "" {
		return kekFile, nil
	}
	if dataDir == "" {
		return "", errors.New("give --data-dir (where the KEK file is) or --kek-file")
	}
	return filepath.Join(dataDir, KEKFile), nil
}

// openSealedStore opens the cluster's existing store and its sealed values
// (kek rotate, vault import); the caller closes the store.
func openSealedStore(ctx context.Context, dataDir, url string, insecure bool) (store.Store, store.SealedStore, error) {
	st, err := openExisting(ctx, dataDir, url, insecure)
	if err != nil {
		return nil, nil, err
	}
	ss, ok := concrete(st).(store.SealedStore)
	if !ok {
		st.Close()
		return nil, nil, fmt.Errorf("this store (%T) cannot list its sealed values", st)
	}
	return st, ss, nil
}

// or returns err, or errRotationClaimLost if that is why it failed.
func (lk *rotationLock) or(err error) error {
	if err != nil {
		if lost := lk.lost(); lost != nil {
			return lost
		}
	}
	return err
}

// writeKeys replaces the KEK file with keys if it still holds was (what
// this rotation read or last wrote): another process may have written it.
func writeKeys(path string, was, keys [][]byte) error {
	now, err := seal.ReadKeys(path)
	if err != nil {
		return err
	}
	if !sameKeys(now, was) {
		return fmt.Errorf("the KEK file %s changed while kek rotate ran (another process wrote it), so kek rotate did not write it: check that no other rotation or copy is under way, then run kek rotate again", path)
	}
	return seal.WriteKeyFile(path, keys)
}

func sameKeys(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// skipped reports whether cfg.Skip names ref.
func (cfg *KEKRotateConfig) skipped(ref store.SealedRef) bool {
	return slices.Contains(cfg.Skip, ref.Kind+"/"+ref.Key)
}

func (cfg *KEKRotateConfig) commandName() string {
	if cfg.command == "" {
		return "kek rotate"
	}
	return cfg.command
}

func (cfg *KEKRotateConfig) progress(format string, args ...any) {
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, format+"\n", args...)
	}
}

func rotateFile(ctx context.Context, cfg KEKRotateConfig, st store.Store, ss store.SealedStore) (*KEKRotateResult, error) {
	keys, err := seal.ReadKeys(cfg.KEKFile)
	if err != nil {
		return nil, err
	}
	res := &KEKRotateResult{Backend: "file"}
	if len(keys) == 1 {
		// Step 1. The current key must open the store's values, or the
		// rotation would lock them away for good.
		ring, err := seal.NewKeyring(keys, nil)
		if err != nil {
			return nil, err
		}
		if err := checkOpens(ctx, ss, ring); err != nil {
			return nil, err
		}
		newKey, err := seal.NewKey(nil)
		if err != nil {
			return nil, err
		}
		read := keys
		keys = [][]byte{newKey, keys[0]}
		if err := writeKeys(cfg.KEKFile, read, keys); err != nil {
			return nil, err
		}
		res.NewKey, res.OldKeys = seal.IDOf(newKey).String(), []string{seal.IDOf(keys[1]).String()}
		cfg.progress("New key-encryption key %s added to %s (the old one, %s, still opens).", res.NewKey, cfg.KEKFile, res.OldKeys[0])
		ev := audit.Event{Time: cfg.Clock(), Type: AuditKEKRotateStarted, Actor: "system", Subject: res.NewKey, Outcome: audit.Success,
			Details: map[string]string{"backend": "file", "old_key_id": res.OldKeys[0], "new_key_id": res.NewKey}}
		if _, err := st.AppendAudit(ctx, ev); err != nil {
			return nil, fmt.Errorf("record the rotation in the audit log: %w (the KEK file holds both keys: run kek rotate again)", storeError(err))
		}
		if cfg.Prepare {
			res.Prepared = true
			return res, nil
		}
		cfg.progress("Waiting %s for seals in flight on running gateways.", cfg.Settle)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cfg.Settle):
		}
	} else {
		res.Resumed = true
		res.NewKey = seal.IDOf(keys[0]).String()
		for _, k := range keys[1:] {
			res.OldKeys = append(res.OldKeys, seal.IDOf(k).String())
		}
		if cfg.Prepare {
			res.Prepared = true
			cfg.progress("%s already holds a new key (%s) and the old ones: nothing to prepare.", cfg.KEKFile, res.NewKey)
			return res, nil
		}
		cfg.progress("Resuming the rotation to key-encryption key %s begun earlier.", res.NewKey)
	}
	ring, err := seal.NewKeyring(keys, nil)
	if err != nil {
		return nil, err
	}
	newID := seal.IDOf(keys[0])
	// Step 2.
	n, err := resealAll(ctx, &cfg, ss, func(v []byte) bool {
		id, ok := seal.SealedKeyID(v)
		return ok && id == newID
	}, func(v []byte, label string) ([]byte, error) {
		pt, err := ring.Open(v, label)
		if err != nil {
			return nil, err
		}
		return ring.Seal(pt, label)
	})
	res.Resealed = n
	if err != nil {
		return res, err
	}
	// Step 3.
	if cfg.beforeDrop != nil {
		if err := cfg.beforeDrop(); err != nil {
			return res, err
		}
	}
	if err := ctx.Err(); err != nil {
		return res, context.Cause(ctx)
	}
	if err := writeKeys(cfg.KEKFile, keys, keys[:1]); err != nil {
		return res, err
	}
	// A gateway may have sealed a value with the old key between the last
	// pass and the write (or one in flight may land now): if one did, the
	// old key goes back, and a rerun re-seals it.
	select {
	case <-ctx.Done():
	case <-time.After(cfg.Settle):
	}
	if ref, err := firstNotUnder(ctx, &cfg, ss, newID); err != nil || ref != nil {
		if werr := writeKeys(cfg.KEKFile, keys[:1], keys); werr != nil {
			return res, fmt.Errorf("the old key-encryption key was dropped from %s, but a value may still need it, and it could not be put back: %w", cfg.KEKFile, werr)
		}
		if err != nil {
			return res, fmt.Errorf("check the store after dropping the old key (it is back in %s; run kek rotate again): %w", cfg.KEKFile, err)
		}
		return res, fmt.Errorf("%s %s was sealed with an old key while kek rotate dropped it (a gateway that had not read the new KEK file?): the old key is back in %s; make sure every gateway can read the KEK file, then run kek rotate again", ref.Kind, ref.Key, cfg.KEKFile)
	}
	cfg.progress("Re-sealed %d values; %s now holds only key-encryption key %s.", n, cfg.KEKFile, res.NewKey)
	// A note left by a restore about the KEK it needed is out of date.
	os.Remove(filepath.Join(filepath.Dir(cfg.KEKFile), seal.HintFile))
	ev := audit.Event{Time: cfg.Clock(), Type: AuditKEKRotated, Actor: "system", Subject: res.NewKey, Outcome: audit.Success,
		Details: map[string]string{"backend": "file", "new_key_id": res.NewKey, "resealed": strconv.Itoa(n)}}
	for i, id := range res.OldKeys {
		ev.Details["old_key_id"+suffix(i)] = id
	}
	if _, err := st.AppendAudit(ctx, ev); err != nil {
		return res, fmt.Errorf("the KEK was rotated, but its audit event was not written: %w", storeError(err))
	}
	return res, nil
}

func suffix(i int) string {
	if i == 0 {
		return ""
	}
	return "_" + strconv.Itoa(i+1)
}

// checkOpens makes sure ring opens a value of each kind in the store.
func checkOpens(ctx context.Context, ss store.SealedStore, ring seal.Sealer) error {
	refs, err := ss.SealedRefs(ctx)
	if err != nil {
		return storeError(err)
	}
	for _, ref := range refs {
		if ref.Kind != store.SealedCAKey {
			continue
		}
		v, err := ss.GetSealed(ctx, ref)
		if err != nil {
			return storeError(err)
		}
		if _, err := ring.Open(v, ref.Label); err != nil {
			return fmt.Errorf("the KEK file does not open the cluster's CA keys, so it cannot be rotated: give the cluster's KEK (--kek-file): %w", err)
		}
	}
	return nil
}

// firstNotUnder returns a sealed value not sealed with the key newID (nor
// skipped), or nil if there is none.
func firstNotUnder(ctx context.Context, cfg *KEKRotateConfig, ss store.SealedStore, newID seal.KeyID) (*store.SealedRef, error) {
	refs, err := ss.SealedRefs(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	for _, ref := range refs {
		if cfg.skipped(ref) {
			continue
		}
		v, err := ss.GetSealed(ctx, ref)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError(err)
		}
		if id, ok := seal.SealedKeyID(v); !ok || id != newID {
			return &ref, nil
		}
	}
	return nil, nil
}

// cannotReseal says which value could not be re-sealed, and how to get
// past it: a value nobody can open would stop every rotation for good.
func cannotReseal(cfg *KEKRotateConfig, ref store.SealedRef, err error) error {
	err = fmt.Errorf("re-seal %s %s: %w", ref.Kind, ref.Key, err)
	if !errors.Is(err, seal.ErrOpen) {
		return err
	}
	name := ref.Kind + "/" + ref.Key
	switch ref.Kind {
	case store.SealedTOTP:
		return fmt.Errorf("%w: reset that user's TOTP with tunnel admin users reset-mfa %s (or leave the value unopenable for good with --skip %s), then run %s again", err, ref.Key, name, cfg.commandName())
	case store.SealedCAKey:
		return fmt.Errorf("%w: this CA key cannot be opened with the KEK file's keys; give the KEK that sealed it (--kek-file), or, if it is lost, leave it unopenable for good with --skip %s, then run %s again", err, name, cfg.commandName())
	default:
		return fmt.Errorf("%w: this value cannot be opened with the KEK file's keys; leave it unopenable for good with --skip %s, then run %s again", err, name, cfg.commandName())
	}
}

// resealAll re-seals every value done does not accept, in passes until a
// pass finds none left, and returns how many it re-sealed.
func resealAll(ctx context.Context, cfg *KEKRotateConfig, ss store.SealedStore, done func([]byte) bool, reseal func(v []byte, label string) ([]byte, error)) (int, error) {
	total := 0
	for pass := 1; ; pass++ {
		refs, err := ss.SealedRefs(ctx)
		if err != nil {
			return total, storeError(err)
		}
		n := 0
		for _, ref := range refs {
			if cfg.skipped(ref) {
				if pass == 1 {
					cfg.progress("Skipped %s/%s (--skip): it stays as it is, and cannot be opened.", ref.Kind, ref.Key)
				}
				continue
			}
			if ctx.Err() != nil {
				return total, context.Cause(ctx)
			}
			for attempt := 0; ; attempt++ {
				v, err := ss.GetSealed(ctx, ref)
				if errors.Is(err, store.ErrNotFound) {
					break
				}
				if err != nil {
					return total, storeError(err)
				}
				if done(v) {
					break
				}
				nv, err := reseal(v, ref.Label)
				if err != nil {
					return total, cannotReseal(cfg, ref, err)
				}
				err = ss.ReplaceSealed(ctx, ref, v, nv)
				if errors.Is(err, store.ErrChanged) && attempt < 10 {
					continue
				}
				if errors.Is(err, store.ErrNotFound) {
					break
				}
				if err != nil {
					return total, storeError(err)
				}
				n++
				total++
				if cfg.afterValue != nil {
					if err := cfg.afterValue(total); err != nil {
						return total, err
					}
				}
				if total%100 == 0 || cfg.Throttle > 0 {
					cfg.progress("Re-sealed %d values.", total)
				}
				if cfg.Throttle > 0 {
					select {
					case <-ctx.Done():
						return total, ctx.Err()
					case <-time.After(cfg.Throttle):
					}
				}
				break
			}
		}
		if n == 0 {
			return total, nil
		}
		if pass > 20 {
			return total, errors.New("sealed values keep appearing under the old key: is a gateway running with a copy of the KEK file that does not have the new key? Copy the file to it, then run kek rotate again")
		}
	}
}

func rotateVault(ctx context.Context, cfg KEKRotateConfig, st store.Store, ss store.SealedStore) (*KEKRotateResult, error) {
	if cfg.Vault.Addr == "" {
		return nil, errors.New("this cluster keeps its keys in Vault: give --vault-addr (and a token: --vault-token-file or VAULT_TOKEN, or AppRole)")
	}
	vc, err := openVault(ctx, cfg.Vault, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	defer vc.Close()
	s, err := vaultSealer(ctx, st, vc)
	if err != nil {
		return nil, err
	}
	res := &KEKRotateResult{Backend: "vault", VaultKey: s.KeyName()}
	if cfg.Prepare {
		return nil, errors.New("--prepare applies to a KEK file: Vault keeps every version of the Transit key, so just run kek rotate")
	}
	latest, err := s.LatestVersion(ctx)
	if err != nil {
		return nil, err
	}
	// A rerun after an interruption finds values under older versions and
	// rewraps them, without rotating again.
	stale, err := anyStale(ctx, ss, latest)
	if err != nil {
		return nil, err
	}
	if !stale {
		if latest, err = s.Rotate(ctx); err != nil {
			return nil, err
		}
		cfg.progress("Vault Transit key %s rotated to version %d.", s.KeyName(), latest)
		ev := audit.Event{Time: cfg.Clock(), Type: AuditKEKRotateStarted, Actor: "system", Subject: s.KeyName(), Outcome: audit.Success,
			Details: map[string]string{"backend": "vault", "vault_key": s.KeyName(), "version": strconv.Itoa(latest)}}
		if _, err := st.AppendAudit(ctx, ev); err != nil {
			return nil, storeError(err)
		}
	} else {
		res.Resumed = true
		cfg.progress("Resuming: rewrapping values to version %d of Vault Transit key %s.", latest, s.KeyName())
	}
	res.VaultVersion = latest
	n, err := resealAll(ctx, &cfg, ss, func(v []byte) bool {
		ver, err := vaultkeys.SealedVersion(v)
		return err == nil && ver >= latest
	}, s.Rewrap)
	res.Resealed = n
	if err != nil {
		return res, err
	}
	ev := audit.Event{Time: cfg.Clock(), Type: AuditKEKRotated, Actor: "system", Subject: s.KeyName(), Outcome: audit.Success,
		Details: map[string]string{"backend": "vault", "vault_key": s.KeyName(), "version": strconv.Itoa(latest), "resealed": strconv.Itoa(n)}}
	if _, err := st.AppendAudit(ctx, ev); err != nil {
		return res, fmt.Errorf("the KEK was rotated, but its audit event was not written: %w", storeError(err))
	}
	cfg.progress("Rewrapped %d values to version %d of Vault Transit key %s.", n, latest, s.KeyName())
	return res, nil
}

// anyStale reports whether a sealed value is under a Transit key version
// older than latest.
func anyStale(ctx context.Context, ss store.SealedStore, latest int) (bool, error) {
	refs, err := ss.SealedRefs(ctx)
	if err != nil {
		return false, storeError(err)
	}
	for _, ref := range refs {
		v, err := ss.GetSealed(ctx, ref)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, storeError(err)
		}
		if ver, err := vaultkeys.SealedVersion(v); err == nil && ver < latest {
			return true, nil
		}
	}
	return false, nil
}
