package vaulttest

import (
	"encoding/base64"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"
)

// TestStartTransit: the real Vault starts, Transit encrypts and decrypts
// (the engine the gateway's key-encryption key uses), a sealed server is
// unsealed with the key it printed, and Stop is safe twice.
func TestStartTransit(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	if err := c.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	if _, err := c.Logical().Write("transit/keys/kek", nil); err != nil {
		t.Fatalf("create key: %v", err)
	}
	plain := base64.StdEncoding.EncodeToString([]byte("a sealed secret"))
	enc, err := c.Logical().Write("transit/encrypt/kek", map[string]any{"plaintext": plain})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	ct, _ := enc.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	dec, err := c.Logical().Write("transit/decrypt/kek", map[string]any{"ciphertext": ct})
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	if got, _ := dec.Data["plaintext"].(string); got != plain {
		t.Errorf("decrypted %q; want %q", got, plain)
	}
	if err := c.Sys().Seal(); err != nil {
		t.Fatalf("seal: %v", err)
	}
	s.Unseal(t)
	if h, err := c.Sys().Health(); err != nil || h.Sealed {
		t.Errorf("after Unseal: %v, %+v; want unsealed", err, h)
	}
	s.Stop()
	s.Stop() // twice is fine
}

// TestStartTLS: with TLS the server answers HTTPS under its own CA.
func TestStartTLS(t *testing.T) {
	s := StartWith(t, Options{TLS: true})
	if !strings.HasPrefix(s.Addr, "https://") || s.CACert == "" {
		t.Fatalf("Addr %q, CACert %q; want https and a CA file", s.Addr, s.CACert)
	}
	if h, err := s.Client(t).Sys().Health(); err != nil || !h.Initialized || h.Sealed {
		t.Fatalf("health over TLS: %v, %+v", err, h)
	}
}
