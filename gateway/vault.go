package gateway

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/dbcreds"
	"github.com/tunnelhq/tunnel/pkg/secretfile"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
)

// Vault as the key backend (--vault-addr): the cluster's three CA keys are
// Transit keys (ECDSA P-256 for the X.509 CA, Ed25519 for the SSH CAs; a
// rotation makes new ones, vaultCAKeyMaker) that sign through Vault (the gateway never holds a
// CA private key; the store keeps only where each lives), and the
// key-encryption key that seals the store's secrets (TOTP secrets) is a
// Transit key (pkg/vaultkeys). Every gateway of the cluster gives the same
// Vault and reads the same keys; no KEK file is needed.

// VaultConfig says how to reach Vault. Empty fields fall back to
// VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT.
type VaultConfig struct {
	// Addr is Vault's URL; empty means Vault is not used.
	Addr string
	// TokenFile holds a Vault token (else $VAULT_TOKEN); RoleID and
	// SecretIDFile log in with AppRole instead.
	TokenFile    string
	RoleID       string
	SecretIDFile string
	// CACert verifies Vault's TLS certificate (else $VAULT_CACERT, then
	// the system roots).
	CACert string
	// TransitMount is where the Transit engine is mounted ("transit").
	TransitMount string
	// DBMounts are the mounts of Vault's database secrets engine the
	// agents' services may name (credentials: {vault: MOUNT/creds/ROLE});
	// empty means "database".
	DBMounts []string
	// DBGrace is how long an unused database credential is kept for the
	// caller's next stream before it is revoked (0: 30s).
	DBGrace time.Duration
}

// vaultKeyNames are the Transit key names of a cluster.
func vaultKeyNames(cluster string) (kek string, x509, sshUser, sshHost string) {
	p := "tunnel-" + cluster
	return p + "-kek", p + "-x509-ca", p + "-ssh-user-ca", p + "-ssh-host-ca"
}

// openVault connects to Vault as vc says.
func openVault(ctx context.Context, vc VaultConfig, log *slog.Logger) (*vaultkeys.Client, error) {
	cfg := vaultkeys.Config{Addr: vc.Addr, RoleID: vc.RoleID, CACert: vc.CACert, TransitMount: vc.TransitMount,
		Logger: log.With("component", "vault")}
	if vc.TokenFile != "" {
		tok, err := secretfile.Read(vc.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--vault-token-file: %w", err)
		}
		cfg.Token = tok
	}
	if vc.SecretIDFile != "" {
		id, err := secretfile.Read(vc.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("--vault-secret-id-file: %w", err)
		}
		cfg.SecretID = id
	}
	c, err := vaultkeys.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to Vault: %w", err)
	}
	return c, nil
}

// vaultInit creates the cluster's Transit keys (or takes existing ones)
// and returns the sealer and the CA signers.
func vaultInit(ctx context.Context, c *vaultkeys.Client, cluster string) (*vaultkeys.Sealer, certs.Signers, error) {
	if err := c.EnsureTransit(ctx); err != nil {
		return nil, certs.Signers{}, err
	}
	kek, x, u, h := vaultKeyNames(cluster)
	if _, err := c.EnsureKey(ctx, kek, vaultkeys.KeyKEK); err != nil {
		return nil, certs.Signers{}, err
	}
	// The X.509 CA is ECDSA P-256, which browsers accept in a chain (the
	// console); the SSH CAs are Ed25519, as for a cluster without Vault.
	var s certs.Signers
	for _, k := range []struct {
		name string
		typ  vaultkeys.KeyType
		dst  *crypto.Signer
	}{{x, vaultkeys.KeyECDSAP256, &s.X509}, {u, vaultkeys.KeyEd25519, &s.SSHUser}, {h, vaultkeys.KeyEd25519, &s.SSHHost}} {
		if _, err := c.EnsureKey(ctx, k.name, k.typ); err != nil {
			return nil, certs.Signers{}, err
		}
		signer, err := vaultkeys.NewSigner(ctx, c, k.name)
		if err != nil {
			return nil, certs.Signers{}, err
		}
		*k.dst = signer
	}
	sealer, err := vaultkeys.NewSealer(ctx, c, kek)
	if err != nil {
		return nil, certs.Signers{}, err
	}
	return sealer, s, nil
}

// vaultCAKeyMaker makes the new CA key of a rotation's start in Vault: a
// new Transit key (ECDSA P-256 for the X.509 CA, Ed25519 for the SSH
// CAs, not exportable) named after the cluster's key of that kind and the
// time, e.g. tunnel-prod-x509-ca-r20261202T030512Z. Two gateways starting
// a rotation in the same second make one key; the store takes one start.
func vaultCAKeyMaker(c *vaultkeys.Client, cluster string, clock func() time.Time) func(context.Context, store.CertKind) (crypto.Signer, error) {
	return func(ctx context.Context, kind store.CertKind) (crypto.Signer, error) {
		_, x, u, h := vaultKeyNames(cluster)
		base, typ := map[store.CertKind]string{store.CertX509: x, store.CertSSHUser: u, store.CertSSHHost: h}[kind], vaultkeys.KeyEd25519
		if base == "" {
			return nil, fmt.Errorf("no Vault key for CA kind %q", kind)
		}
		if kind == store.CertX509 {
			typ = vaultkeys.KeyECDSAP256
		}
		name := base + "-r" + clock().UTC().Format("20060102T150405Z")
		if _, err := c.EnsureKey(ctx, name, typ); err != nil {
			return nil, err
		}
		return vaultkeys.NewSigner(ctx, c, name)
	}
}

// vaultOpener opens the CA keys of the store that live in Vault.
func vaultOpener(ctx context.Context, c *vaultkeys.Client) func(store.CAKey) (crypto.Signer, error) {
	return func(k store.CAKey) (crypto.Signer, error) {
		ref, ok := strings.CutPrefix(string(k.SealedPrivate), certs.RefPrefix)
		name, isVault := vaultkeys.ParseRef(ref)
		if !ok || !isVault {
			return nil, fmt.Errorf("the %s CA key is not held in Vault (this cluster keeps its CA keys sealed with a KEK file): drop --vault-addr", k.Kind)
		}
		return vaultkeys.NewSigner(ctx, c, name)
	}
}

// vaultSealer is the Transit sealer of the cluster in st.
func vaultSealer(ctx context.Context, st store.Store, c *vaultkeys.Client) (*vaultkeys.Sealer, error) {
	cluster, err := st.GetMeta(ctx, "cluster")
	if err != nil {
		return nil, fmt.Errorf("read cluster name: %w", storeError(err))
	}
	if b, err := st.GetMeta(ctx, store.KeyBackendMeta); err != nil || b != "vault" {
		return nil, fmt.Errorf("cluster %q keeps its keys sealed with a KEK file, not in Vault: drop --vault-addr, or move its keys into Vault with tunnel-gateway vault import (every gateway stopped; an import begun earlier finishes when run again)", cluster)
	}
	kek, _, _, _ := vaultKeyNames(cluster)
	return vaultkeys.NewSealer(ctx, c, kek)
}

// keysInVault reports whether the cluster in the store so names keeps its
// keys in Vault (for a clear refusal when --vault-addr is missing).
func keysInVault(ctx context.Context, so storeOptions) bool {
	st, err := openStore(ctx, so)
	if err != nil {
		return false
	}
	defer st.Close()
	b, err := st.GetMeta(ctx, "key_backend")
	return err == nil && b == "vault"
}

// setupDBCreds, with Vault, leases the database credentials of services
// whose agent logs in to its database for the caller (docs/DBCREDS.md):
// the relay asks it for each stream; it is told of locks and removals
// made here (the session manager) and elsewhere (the fan-out, which
// startBackground gives g.dbcreds).
func (g *Gateway) setupDBCreds() {
	if g.vault == nil {
		return
	}
	g.dbcreds = &dbcreds.Manager{Vault: dbcreds.VaultAPI{Client: g.vault.API()}, Mounts: g.cfg.Vault.DBMounts,
		Grace: g.cfg.Vault.DBGrace, Clock: g.cfg.Clock, Log: g.cfg.Log}
	g.relay.DBCreds = g.dbcreds
	g.sess.AddKiller(g.dbcreds)
}

// closeDBCreds revokes the leases this gateway holds (no stream uses them
// any more).
func (g *Gateway) closeDBCreds() {
	if g.dbcreds != nil {
		g.dbcreds.Close()
	}
}
