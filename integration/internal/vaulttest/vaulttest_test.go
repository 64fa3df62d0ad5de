package vaulttest

import (
	"encoding/base64"
	"testing"

	vault "github.com/hashicorp/vault/api"
)

// TestStartTransit: the real Vault starts, and Transit encrypts and
// decrypts (the engine the gateway's key-encryption key will use).
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
	if len(ct) < 10 || ct[:9] != "vault:v1:" {
		t.Fatalf("ciphertext %q", ct)
	}
	dec, err := c.Logical().Write("transit/decrypt/kek", map[string]any{"ciphertext": ct})
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	if got, _ := dec.Data["plaintext"].(string); got != plain {
		t.Errorf("decrypted %q; want %q", got, plain)
	}
	s.Stop()
	s.Stop() // twice is fine
}
