package vaultkeys

// A throwaway real Vault for this package's tests: pkg/vaultkeys/vaulttest
// (`vault server -dev` on a loopback port, the one helper the end-to-end
// tests use too), with Transit mounted. It fails in CI and skips locally
// when `vault` is missing.

import (
	"context"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/pkg/vaultkeys/vaulttest"
)

type testServer = vaulttest.Server

// startVault runs a dev-mode Vault with Transit mounted; tls selects
// -dev-tls (a self-made CA in CACert).
func startVault(t testing.TB, tls bool) *testServer {
	t.Helper()
	s := vaulttest.StartWith(t, vaulttest.Options{TLS: tls})
	if err := s.Client(t).Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	return s
}

// newClient starts a client of s with its root token.
func newClient(t testing.TB, s *testServer) *Client {
	t.Helper()
	c, err := New(context.Background(), Config{Addr: s.Addr, Token: s.Token, CACert: s.CACert})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newSigner creates an Ed25519 key name and returns its Signer.
func newSigner(t testing.TB, c *Client, name string) *Signer {
	t.Helper()
	ctx := context.Background()
	if created, err := c.EnsureKey(ctx, name, KeyEd25519); err != nil || !created {
		t.Fatalf("EnsureKey(%s) = %v, %v; want created", name, created, err)
	}
	s, err := NewSigner(ctx, c, name)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}
