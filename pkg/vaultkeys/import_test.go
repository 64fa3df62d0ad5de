package vaultkeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"
)

// TestImportKey: an Ed25519 and an ECDSA P-256 key imported into the real
// Vault sign there with the same public key (Vault's signature verifies
// with the original key), are not exportable, and a rerun keeps them; a
// name holding another key is refused, and the import never asks for an
// exportable key.
func TestImportKey(t *testing.T) {
	s := startVault(t, false)
	c := newClient(t, s)
	ctx := context.Background()
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		typ  KeyType
	}{{"imported-ed", edKey, KeyEd25519}, {"imported-ec", ecKey, KeyECDSAP256}} {
		t.Run(tc.name, func(t *testing.T) {
			sg, err := c.ImportKey(ctx, tc.name, tc.key)
			if err != nil {
				t.Fatalf("ImportKey: %v", err)
			}
			if sg.KeyType() != tc.typ || !samePublic(sg.Public(), tc.key.Public()) {
				t.Fatalf("the imported key is %s with another public key", sg.KeyType())
			}
			msg := []byte("signed in Vault with the imported key")
			switch pub := tc.key.Public().(type) {
			case ed25519.PublicKey:
				sig, err := sg.Sign(rand.Reader, msg, crypto.Hash(0))
				if err != nil || !ed25519.Verify(pub, msg, sig) {
					t.Errorf("Vault's signature does not verify with the original key: %v", err)
				}
			case *ecdsa.PublicKey:
				d := sha256.Sum256(msg)
				sig, err := sg.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil || !ecdsa.VerifyASN1(pub, d[:], sig) {
					t.Errorf("Vault's signature does not verify with the original key: %v", err)
				}
			}
			info, err := c.readKey(ctx, tc.name)
			if err != nil || info.Exportable || info.PlainBackup {
				t.Errorf("the imported key: %+v, %v; want not exportable, no plaintext backup", info, err)
			}
			// A rerun keeps the key.
			again, err := c.ImportKey(ctx, tc.name, tc.key)
			if err != nil || !samePublic(again.Public(), tc.key.Public()) {
				t.Errorf("a second import: %v", err)
			}
		})
	}
	// Another key under a taken name is refused.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := c.ImportKey(ctx, "imported-ed", other); err == nil || !strings.Contains(err.Error(), "holds another key") {
		t.Errorf("importing another key under a taken name: %v", err)
	}
	// Other key kinds are refused before anything is sent.
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := c.ImportKey(ctx, "imported-p384", p384); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("importing a P-384 key: %v", err)
	}
}
