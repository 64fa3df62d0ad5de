package vaultkeys

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// KeyType is the kind of a Transit key this package uses.
type KeyType string

const (
	// KeyEd25519 is a signing key for a CA (ed25519, not exportable): the
	// SSH CAs, and the X.509 CA of clusters made before KeyECDSAP256.
	KeyEd25519 KeyType = "ed25519"
	// KeyECDSAP256 is a signing key for a CA (ecdsa-p256, not
	// exportable): the X.509 CA, whose chains browsers must accept, which
	// they do not with Ed25519.
	KeyECDSAP256 KeyType = "ecdsa-p256"
	// KeyKEK is a key-encryption key: aes256-gcm96 with key derivation, so
	// that a sealed value is bound to its label (Transit's "context").
	KeyKEK KeyType = "aes256-gcm96"
)

// EnsureTransit mounts the Transit engine at the configured mount if
// nothing is mounted there. It needs a token allowed to manage mounts.
func (c *Client) EnsureTransit(ctx context.Context) error {
	const path = "sys/mounts"
	s, err := c.read(ctx, path, "")
	if err != nil {
		return err
	}
	if s != nil {
		if m, ok := s.Data[c.transit+"/"].(map[string]any); ok {
			if t, _ := m["type"].(string); t != "transit" {
				return fmt.Errorf("vault: %s/ on Vault at %s is a %q engine, not transit", c.transit, c.addr, t)
			}
			return nil
		}
	}
	_, err = c.write(ctx, "sys/mounts/"+c.transit, "", map[string]any{"type": "transit", "description": "tunnel gateway keys"})
	return err
}

// EnsureKey creates the Transit key name of type typ if it does not exist
// (never exportable, never deletable through this package) and checks that
// an existing one has that type. It reports whether it created the key.
func (c *Client) EnsureKey(ctx context.Context, name string, typ KeyType) (created bool, err error) {
	if err := checkKeyName(name); err != nil {
		return false, err
	}
	info, err := c.readKey(ctx, name)
	switch {
	case errors.Is(err, ErrKeyMissing):
		data := map[string]any{"type": string(typ), "exportable": false, "allow_plaintext_backup": false}
		if typ == KeyKEK {
			data["derived"] = true
		}
		if _, err := c.write(ctx, c.transit+"/keys/"+name, name, data); err != nil {
			return false, err
		}
		created = true
		if info, err = c.readKey(ctx, name); err != nil {
			return created, err
		}
	case err != nil:
		return false, err
	}
	if err := info.check(typ); err != nil {
		return created, err
	}
	return created, nil
}

// keyInfo is what transit/keys/NAME says about a key.
type keyInfo struct {
	addr, mount   string
	Name          string                     `json:"name"`
	Type          string                     `json:"type"`
	Derived       bool                       `json:"derived"`
	Exportable    bool                       `json:"exportable"`
	PlainBackup   bool                       `json:"allow_plaintext_backup"`
	LatestVersion int                        `json:"latest_version"`
	Keys          map[string]json.RawMessage `json:"keys"`
}

func (k *keyInfo) check(typ KeyType) error {
	if k.Type != string(typ) {
		return fmt.Errorf("vault: Transit key %q on Vault at %s is %s, not %s: choose another key name", k.Name, k.addr, k.Type, typ)
	}
	if k.Exportable || k.PlainBackup {
		return fmt.Errorf("vault: Transit key %q on Vault at %s can leave Vault (exportable or with plaintext backups allowed): a key of this cluster must not; choose another key name", k.Name, k.addr)
	}
	if typ == KeyKEK && !k.Derived {
		return fmt.Errorf("vault: Transit key %q on Vault at %s was not created with derived=true, so it cannot bind a sealed value to its label: create a new key", k.Name, k.addr)
	}
	if k.LatestVersion < 1 {
		return fmt.Errorf("vault: Transit key %q on Vault at %s has no version", k.Name, k.addr)
	}
	return nil
}

// publicKey returns the public key of version v of an asymmetric key as
// Transit gives it: base64 for Ed25519, PEM for ECDSA.
func (k *keyInfo) publicKey(v int) (string, error) {
	raw, ok := k.Keys[strconv.Itoa(v)]
	if !ok {
		return "", fmt.Errorf("vault: Transit key %q on Vault at %s has no version %d", k.Name, k.addr, v)
	}
	var kv struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &kv); err != nil || kv.PublicKey == "" {
		return "", fmt.Errorf("vault: Transit key %q version %d on Vault at %s has no public key", k.Name, v, k.addr)
	}
	return kv.PublicKey, nil
}

// readKey reads transit/keys/NAME; a missing key is ErrKeyMissing.
func (c *Client) readKey(ctx context.Context, name string) (*keyInfo, error) {
	path := c.transit + "/keys/" + name
	s, err := c.read(ctx, path, name)
	if err != nil {
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, &Error{Kind: ErrKeyMissing, Addr: c.addr, Path: path, Key: name}
	}
	info, err := decodeKey(s)
	if err != nil {
		return nil, fmt.Errorf("vault: reading Transit key %q on Vault at %s: %w", name, c.addr, err)
	}
	info.addr, info.mount = c.addr, c.transit
	return info, nil
}

func decodeKey(s *vault.Secret) (*keyInfo, error) {
	b, err := json.Marshal(s.Data)
	if err != nil {
		return nil, err
	}
	var k keyInfo
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// checkKeyName refuses names that would change the API path.
func checkKeyName(name string) error {
	if name == "" || strings.ContainsAny(name, "/?#%\\ ") || name == "." || name == ".." {
		return fmt.Errorf("vault: %q is not a valid Transit key name", name)
	}
	return nil
}

// parseVersioned splits Transit's "vault:vN:base64" into N and the decoded
// bytes.
func parseVersioned(s string) (int, []byte, error) {
	rest, ok := strings.CutPrefix(s, "vault:v")
	if !ok {
		return 0, nil, errors.New(`not a Transit value (no "vault:v" prefix)`)
	}
	vs, b64, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, nil, errors.New("not a Transit value (no version)")
	}
	v, err := strconv.Atoi(vs)
	if err != nil || v < 1 {
		return 0, nil, fmt.Errorf("not a Transit value (version %q)", vs)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return 0, nil, fmt.Errorf("not a Transit value: %w", err)
	}
	return v, b, nil
}
