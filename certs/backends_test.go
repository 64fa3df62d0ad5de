package certs

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys/vaulttest"
)

// backend is where an Authority's CA keys live: in the process ("local")
// or in a real dev Vault's Transit engine ("vault"), behind the same
// Authority. The certificate tests run on both (forEachBackend), so every
// property they check — principals, TTL caps, extensions, key ids, what
// ssh-keygen and openssl make of the certificates — holds for both.
type backend struct {
	name string
	// generate makes an Authority for a resolved-enough cfg.
	generate func(t testing.TB, cfg Config) *Authority
	// vault is the Vault server of the "vault" backend.
	vault *vaulttest.Server
}

// authority makes an Authority for cluster "prod" at testNow.
func (b backend) authority(t testing.TB) *Authority { return b.with(t, Config{}) }

// with makes an Authority for cfg; Cluster defaults to "prod" and Clock
// to testNow.
func (b backend) with(t testing.TB, cfg Config) *Authority {
	t.Helper()
	if cfg.Cluster == "" {
		cfg.Cluster = "prod"
	}
	if cfg.Clock == nil {
		cfg.Clock = fixedClock(testNow)
	}
	return b.generate(t, cfg)
}

var localBackend = backend{name: "local", generate: func(t testing.TB, cfg Config) *Authority {
	t.Helper()
	a, err := Generate(cfg)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return a
}}

// vaultKeys numbers Transit keys, so that every Authority of a test gets
// its own.
var vaultKeys atomic.Int64

// newVaultBackend starts a dev Vault (failing in CI, skipping locally when
// the binary is missing) whose Authorities sign through Transit keys.
func newVaultBackend(t testing.TB) backend {
	t.Helper()
	srv := vaulttest.Start(t)
	c, err := vaultkeys.New(context.Background(), vaultkeys.Config{Addr: srv.Addr, Token: srv.Token})
	if err != nil {
		t.Fatalf("vaultkeys.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.EnsureTransit(context.Background()); err != nil {
		t.Fatalf("EnsureTransit: %v", err)
	}
	return backend{name: "vault", vault: srv, generate: func(t testing.TB, cfg Config) *Authority {
		t.Helper()
		ctx := context.Background()
		n := vaultKeys.Add(1)
		var s [3]*vaultkeys.Signer
		// The key types of a new cluster: an ECDSA P-256 X.509 CA,
		// Ed25519 SSH CAs.
		for i, kind := range []string{"x509", "ssh-user", "ssh-host"} {
			name := fmt.Sprintf("test-%d-%s-ca", n, kind)
			typ := vaultkeys.KeyEd25519
			if kind == "x509" {
				typ = vaultkeys.KeyECDSAP256
			}
			if _, err := c.EnsureKey(ctx, name, typ); err != nil {
				t.Fatalf("EnsureKey(%s): %v", name, err)
			}
			if s[i], err = vaultkeys.NewSigner(ctx, c, name); err != nil {
				t.Fatalf("NewSigner(%s): %v", name, err)
			}
		}
		a, err := GenerateWith(cfg, Signers{X509: s[0], SSHUser: s[1], SSHHost: s[2]})
		if err != nil {
			t.Fatalf("GenerateWith: %v", err)
		}
		return a
	}}
}

// forEachBackend runs f as a subtest on the local backend and on a Vault
// backend (one dev Vault, started for the subtest).
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Run("local", func(t *testing.T) { f(t, localBackend) })
	t.Run("vault", func(t *testing.T) { f(t, newVaultBackend(t)) })
}
