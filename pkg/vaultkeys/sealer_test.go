package vaultkeys

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

func newSealer(t testing.TB, c *Client, name string) *Sealer {
	t.Helper()
	ctx := context.Background()
	if _, err := c.EnsureKey(ctx, name, KeyKEK); err != nil {
		t.Fatalf("EnsureKey(%s, KEK): %v", name, err)
	}
	s, err := NewSealer(ctx, c, name)
	if err != nil {
		t.Fatalf("NewSealer: %v", err)
	}
	return s
}

// TestSealerRoundTrip: values seal and open with their label, carry the
// key version, and fail with seal.ErrOpen under another label or altered.
func TestSealerRoundTrip(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	var s seal.Sealer = newSealer(t, c, "kek")
	for _, pt := range [][]byte{nil, []byte("x"), []byte("JBSWY3DPEHPK3PXP"), bytes.Repeat([]byte{0xa5}, 4096)} {
		sealed, err := s.Seal(pt, "totp/alice")
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if !bytes.HasPrefix(sealed, []byte("vault:v1:")) {
			t.Errorf("sealed value %.20q does not carry the key version", sealed)
		}
		if len(pt) >= 4 && bytes.Contains(sealed, pt) {
			t.Errorf("the sealed value holds the plaintext")
		}
		got, err := s.Open(sealed, "totp/alice")
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("Open = %q, %v; want %q", got, err, pt)
		}
		if _, err := s.Open(sealed, "totp/bob"); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("Open under another label: %v; want seal.ErrOpen", err)
		}
	}
	sealed, _ := s.Seal([]byte("secret"), "ca/ssh-user")
	for name, bad := range map[string][]byte{
		"altered":         append(bytes.Clone(sealed[:len(sealed)-4]), []byte("AAA=")...),
		"local format":    {0x01, 2, 3},
		"empty":           nil,
		"not base64":      []byte("vault:v1:!!!"),
		"unknown version": []byte(strings.Replace(string(sealed), "vault:v1:", "vault:v9:", 1)),
	} {
		if _, err := s.Open(bad, "ca/ssh-user"); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("Open(%s): %v; want seal.ErrOpen", name, err)
		}
	}
	// Another KEK does not open it.
	other := newSealer(t, c, "kek2")
	if _, err := other.Open(sealed, "ca/ssh-user"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open under another key: %v; want seal.ErrOpen", err)
	}
}

// TestSealerRotateRewrap: after Rotate, new values seal under version 2,
// version-1 values still open, Rewrap moves them to version 2 (with the
// right label only), and once Vault's min_decryption_version is raised
// the old value no longer opens but the rewrapped one does.
func TestSealerRotateRewrap(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	ctx := context.Background()
	s := newSealer(t, c, "kek")
	old, err := s.Seal([]byte("ca private key"), "ca/x509")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Rotate(ctx); err != nil || v != 2 {
		t.Fatalf("Rotate = %d, %v; want 2", v, err)
	}
	fresh, _ := s.Seal([]byte("new"), "ca/x509")
	if v, _ := SealedVersion(fresh); v != 2 {
		t.Errorf("a value sealed after rotation has version %d; want 2", v)
	}
	if got, err := s.Open(old, "ca/x509"); err != nil || string(got) != "ca private key" {
		t.Errorf("Open(version 1) after rotation = %q, %v", got, err)
	}
	if _, err := s.Rewrap(old, "ca/ssh-user"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Rewrap under another label: %v; want seal.ErrOpen", err)
	}
	re, err := s.Rewrap(old, "ca/x509")
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if v, _ := SealedVersion(re); v != 2 {
		t.Errorf("rewrapped value has version %d; want 2", v)
	}
	if _, err := c.API().Logical().Write("transit/keys/kek/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(old, "ca/x509"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open(version 1) after min_decryption_version=2: %v; want seal.ErrOpen", err)
	}
	if got, err := s.Open(re, "ca/x509"); err != nil || string(got) != "ca private key" {
		t.Errorf("Open(rewrapped) = %q, %v", got, err)
	}
	if v, err := s.LatestVersion(ctx); err != nil || v != 2 {
		t.Errorf("LatestVersion = %d, %v; want 2", v, err)
	}
}

// TestNewSealerRefusesUnderivedKey: a KEK without key derivation cannot
// bind labels, so NewSealer refuses it.
func TestNewSealerRefusesUnderivedKey(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	if _, err := c.API().Logical().Write("transit/keys/plain", nil); err != nil {
		t.Fatal(err)
	}
	_, err := NewSealer(context.Background(), c, "plain")
	if err == nil || !strings.Contains(err.Error(), "derived=true") {
		t.Errorf("NewSealer(underived key): %v; want a refusal naming derived=true", err)
	}
	if _, err := NewSealer(context.Background(), c, "missing"); !errors.Is(err, ErrKeyMissing) {
		t.Errorf("NewSealer(missing): %v; want ErrKeyMissing", err)
	}
}
