package vaultkeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/kwp/subtle"
)

// ImportKey brings key, an Ed25519 or ECDSA P-256 private key held outside
// Vault until now (a CA key sealed with a KEK file), into Transit as the
// key name: not exportable, no plaintext backup, no rotation. It uses
// Transit's "bring your own key": the key (PKCS #8) is wrapped with a
// fresh AES-256 key (AES-KWP, RFC 5649, tink's kwp), and that key with the
// mount's RSA wrapping key (RSA-OAEP with SHA-256), so that it crosses the
// network only wrapped for Vault. An existing key of that name is kept if
// it holds the same public key (a rerun), and refused otherwise. It
// returns the key's Signer.
func (c *Client) ImportKey(ctx context.Context, name string, key crypto.Signer) (*Signer, error) {
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	var typ KeyType
	switch k := key.(type) {
	case ed25519.PrivateKey:
		typ = KeyEd25519
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("vault: only ECDSA P-256 keys can be imported")
		}
		typ = KeyECDSAP256
	default:
		return nil, fmt.Errorf("vault: a %T cannot be imported: use Ed25519 or ECDSA P-256", key)
	}
	if s, err := NewSigner(ctx, c, name); err == nil {
		if !samePublic(s.Public(), key.Public()) {
			return nil, fmt.Errorf("vault: Transit key %q on Vault at %s exists and holds another key: choose another key name", name, c.addr)
		}
		return s, nil
	} else if !errors.Is(err, ErrKeyMissing) {
		return nil, err
	}
	wrapped, err := c.wrapForImport(ctx, key)
	if err != nil {
		return nil, err
	}
	if _, err := c.write(ctx, c.transit+"/keys/"+name+"/import", name, map[string]any{
		"ciphertext":             wrapped,
		"hash_function":          "SHA256",
		"type":                   string(typ),
		"exportable":             false,
		"allow_plaintext_backup": false,
		"allow_rotation":         false,
	}); err != nil {
		return nil, err
	}
	s, err := NewSigner(ctx, c, name)
	if err != nil {
		return nil, err
	}
	if !samePublic(s.Public(), key.Public()) {
		return nil, fmt.Errorf("vault: Transit key %q on Vault at %s does not hold the key just imported", name, c.addr)
	}
	return s, nil
}

// wrapForImport wraps key for the mount's wrapping key: base64 of the
// RSA-OAEP-wrapped AES key followed by the AES-KWP-wrapped PKCS #8 key.
func (c *Client) wrapForImport(ctx context.Context, key crypto.Signer) (string, error) {
	path := c.transit + "/wrapping_key"
	s, err := c.read(ctx, path, "")
	if err != nil {
		return "", err
	}
	var pemKey string
	if s != nil {
		pemKey, _ = s.Data["public_key"].(string)
	}
	block, _ := pem.Decode([]byte(pemKey))
	if block == nil {
		return "", fmt.Errorf("vault: %s on Vault at %s holds no PEM public key", path, c.addr)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("vault: %s on Vault at %s: %w", path, c.addr, err)
	}
	wrappingKey, ok := pub.(*rsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("vault: %s on Vault at %s is a %T, not an RSA key", path, c.addr, pub)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("vault: encode the key to import: %w", err)
	}
	defer clear(der)
	aesKey := make([]byte, 32)
	if _, err := rand.Read(aesKey); err != nil {
		return "", err
	}
	defer clear(aesKey)
	kwp, err := subtle.NewKWP(aesKey)
	if err != nil {
		return "", err
	}
	wrappedKey, err := kwp.Wrap(der)
	if err != nil {
		return "", fmt.Errorf("vault: wrap the key to import: %w", err)
	}
	wrappedAES, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, wrappingKey, aesKey, nil)
	if err != nil {
		return "", fmt.Errorf("vault: wrap the key to import: %w", err)
	}
	return base64.StdEncoding.EncodeToString(append(wrappedAES, wrappedKey...)), nil
}

// samePublic reports whether a and b are the same public key.
func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
