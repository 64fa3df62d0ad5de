package gateway

// Moving a cluster's keys from its KEK file into Vault (tunnel-gateway
// vault import), with every gateway stopped:
//
//  1. The cluster's Transit KEK is created in Vault (as init --vault-addr
//     does).
//  2. Every sealed value is moved (resealAll, as kek rotate does): a CA
//     private key is opened with the KEK file and imported into Transit
//     (vaultkeys.ImportKey: wrapped for Vault, not exportable), and the
//     store keeps only its reference; any other value (TOTP secrets,
//     session recordings) is opened with the KEK file and sealed again
//     with the Transit KEK.
//  3. The store records that the keys live in Vault (key_backend), with
//     an audit event.
//
// The CA keys stay the same keys, so every pin, certificate and trust
// bundle stays valid: agents and users notice nothing. Each step is safe to
// interrupt: a rerun skips what was moved (CA references, Transit
// ciphertexts) and imports a CA key under the same name (derived from its
// public key). Until step 3 the cluster starts neither way, and both
// refusals say to run the import again.

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
)

// AuditKeysMovedToVault records that a cluster's keys moved into Vault.
const AuditKeysMovedToVault audit.Type = "kek.moved_to_vault"

// VaultImportConfig says which cluster's keys to move into which Vault.
type VaultImportConfig struct {
	DataDir       string
	KEKFile       string // default DataDir/kek
	Store         string
	StoreInsecure bool
	Vault         VaultConfig
	// Progress, if set, receives a line per step.
	Progress io.Writer
	Clock    func() time.Time

	// afterValue, in tests, runs after each value is moved; an error
	// stops the import there (an injected crash).
	afterValue func(n int) error
}

// VaultImportResult reports a move.
type VaultImportResult struct {
	// Already: the cluster's keys were in Vault before this run.
	Already bool `json:"already_in_vault,omitempty"`
	// KEK is the Transit key that now seals the store's secrets.
	KEK string `json:"vault_kek"`
	// CAKeys are the Transit keys the CA keys were imported as.
	CAKeys []string `json:"vault_ca_keys,omitempty"`
	// Resealed counts the other values sealed again with the Transit KEK.
	Resealed int `json:"resealed"`
}

// ImportKeysToVault moves the keys of a cluster that keeps them sealed with
// a KEK file into Vault. Every gateway of the cluster must be stopped.
func ImportKeysToVault(ctx context.Context, cfg VaultImportConfig) (*VaultImportResult, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Vault.Addr == "" {
		return nil, errors.New("give --vault-addr (and a token: --vault-token-file or VAULT_TOKEN, or AppRole): the Vault to move the keys into")
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
	cluster, err := st.GetMeta(ctx, "cluster")
	if err != nil {
		return nil, fmt.Errorf("read the cluster name: %w", storeError(err))
	}
	kekName, _, _, _ := vaultKeyNames(cluster)
	if b, _ := st.GetMeta(ctx, store.KeyBackendMeta); b == "vault" {
		return &VaultImportResult{Already: true, KEK: kekName}, nil
	}
	if err := noGatewayRunning(ctx, st, cfg.Clock()); err != nil {
		return nil, err
	}
	keys, err := seal.ReadKeys(cfg.KEKFile)
	if err != nil {
		return nil, fmt.Errorf("the cluster's KEK file: %w", err)
	}
	ring, err := seal.NewKeyring(keys, nil)
	if err != nil {
		return nil, err
	}
	rcfg := KEKRotateConfig{DataDir: cfg.DataDir, KEKFile: cfg.KEKFile, Store: cfg.Store, Progress: cfg.Progress,
		Clock: cfg.Clock, command: "tunnel-gateway vault import", afterValue: cfg.afterValue}
	// One move or rotation at a time, on this host and across the store.
	lk, err := lockRotation(ctx, &rcfg, st, cfg.KEKFile+".lock")
	if err != nil {
		return nil, err
	}
	defer lk.release()
	res, err := importKeys(lk.ctx, &rcfg, cfg.Vault, cluster, st, ss, ring)
	return res, lk.or(err)
}

func importKeys(ctx context.Context, cfg *KEKRotateConfig, vcfg VaultConfig, cluster string, st store.Store, ss store.SealedStore, ring seal.Sealer) (*VaultImportResult, error) {
	vc, err := openVault(ctx, vcfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	defer vc.Close()
	if err := vc.EnsureTransit(ctx); err != nil {
		return nil, err
	}
	kekName, _, _, _ := vaultKeyNames(cluster)
	if _, err := vc.EnsureKey(ctx, kekName, vaultkeys.KeyKEK); err != nil {
		return nil, err
	}
	vs, err := vaultkeys.NewSealer(ctx, vc, kekName)
	if err != nil {
		return nil, err
	}
	res := &VaultImportResult{KEK: kekName}
	cfg.progress("Moving the keys of cluster %q from %s into Vault at %s (Transit KEK %s).", cluster, cfg.KEKFile, vc.Addr(), kekName)
	n, err := resealAll(ctx, cfg, ss, func(v []byte) bool {
		_, err := vaultkeys.SealedVersion(v)
		return err == nil
	}, func(v []byte, label string) ([]byte, error) {
		if kind, ok := strings.CutPrefix(label, "ca/"); ok {
			key, err := certs.OpenSealedKey(store.CAKey{Kind: kind, SealedPrivate: v}, ring)
			if err != nil {
				return nil, err
			}
			name, err := importedCAKeyName(cluster, store.CertKind(kind), key.Public())
			if err != nil {
				return nil, err
			}
			s, err := vc.ImportKey(ctx, name, key)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(res.CAKeys, name) {
				res.CAKeys = append(res.CAKeys, name)
			}
			cfg.progress("CA key %s imported into Vault as Transit key %s.", kind, name)
			return []byte(certs.RefPrefix + s.Ref()), nil
		}
		pt, err := ring.Open(v, label)
		if err != nil {
			return nil, err
		}
		defer clear(pt)
		return vs.Seal(pt, label)
	})
	res.Resealed = max(n-len(res.CAKeys), 0)
	if err != nil {
		return res, err
	}
	ev := audit.Event{Time: cfg.Clock(), Type: AuditKeysMovedToVault, Actor: "system", Subject: cluster, Outcome: audit.Success,
		Details: map[string]string{"vault_addr": vc.Addr(), "vault_kek": kekName, "vault_ca_keys": strings.Join(res.CAKeys, ","),
			"resealed": strconv.Itoa(res.Resealed)}}
	if err := ss.SetKeyBackend(ctx, "vault", ev); err != nil {
		return res, fmt.Errorf("every key is in Vault, but the store could not record it: %w (run tunnel-gateway vault import again)", storeError(err))
	}
	cfg.progress("The cluster's keys are in Vault: start every gateway with --vault-addr %s.", vc.Addr())
	return res, nil
}

// importedCAKeyName names the Transit key a CA key is imported as: the
// cluster's key name of its kind and a digest of its public key, so that a
// rerun imports it under the same name, e.g.
// tunnel-prod-x509-ca-i3f9a0c21d4e7.
func importedCAKeyName(cluster string, kind store.CertKind, pub any) (string, error) {
	_, x, u, h := vaultKeyNames(cluster)
	base := map[store.CertKind]string{store.CertX509: x, store.CertSSHUser: u, store.CertSSHHost: h}[kind]
	if base == "" {
		return "", fmt.Errorf("no Vault key name for CA kind %q", kind)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("CA key %s: %w", kind, err)
	}
	sum := sha256.Sum256(der)
	return base + "-i" + hex.EncodeToString(sum[:6]), nil
}

// noGatewayRunning refuses while a gateway of the cluster sends
// heartbeats: it would seal with the KEK file meanwhile.
func noGatewayRunning(ctx context.Context, st store.Store, now time.Time) error {
	gws, err := st.ListGateways(ctx)
	if err != nil {
		return fmt.Errorf("list the cluster's gateways: %w", storeError(err))
	}
	for _, g := range gws {
		if g.Alive(now) {
			return fmt.Errorf("gateway %s of this cluster is running (last heartbeat %s ago): stop every gateway, then run tunnel-gateway vault import again",
				g.ID, now.Sub(g.HeartbeatAt).Round(time.Second))
		}
	}
	return nil
}
