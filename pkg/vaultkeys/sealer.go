package vaultkeys

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

// Sealer implements seal.Sealer with a Transit key-encryption key: a
// derived aes256-gcm96 key, the label being Transit's derivation context,
// so a value opens only with the label it was sealed under. A sealed value
// is Transit's ciphertext, "vault:vN:…", which names the key version N.
//
// Rotating the KEK is Rotate, then Rewrap on every sealed value (old
// versions keep opening until Vault's min_decryption_version is raised).
type Sealer struct {
	c    *Client
	name string
}

var _ seal.Sealer = (*Sealer)(nil)

// sealedPrefix starts every value this Sealer makes.
const sealedPrefix = "vault:v"

// NewSealer returns a Sealer for the Transit key name, which must exist (see
// EnsureKey with KeyKEK) and be derived.
func NewSealer(ctx context.Context, c *Client, name string) (*Sealer, error) {
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	info, err := c.readKey(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := info.check(KeyKEK); err != nil {
		return nil, err
	}
	return &Sealer{c: c, name: name}, nil
}

// KeyName returns the Transit key's name.
func (s *Sealer) KeyName() string { return s.name }

// labelContext is the derivation context for label: domain-separated like
// pkg/seal's associated data, and never empty (Transit requires one).
func labelContext(label string) string {
	return base64.StdEncoding.EncodeToString([]byte("tunnel-seal-v1\x00" + label))
}

// Seal implements seal.Sealer: it encrypts plaintext under the latest key
// version, bound to label.
func (s *Sealer) Seal(plaintext []byte, label string) ([]byte, error) {
	path := s.c.transit + "/encrypt/" + s.name
	out, err := s.c.write(context.Background(), path, s.name, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(plaintext),
		"context":   labelContext(label),
	})
	if err != nil {
		return nil, fmt.Errorf("sealing %s with vault key %s: %w", label, s.name, err)
	}
	return s.ciphertext(out, "sealing "+label)
}

// Open implements seal.Sealer. A value that was altered, sealed under
// another label or key, or whose version Vault no longer decrypts fails
// with an error matching seal.ErrOpen; Vault being unreachable, sealed or
// refusing the token fails with this package's errors instead.
func (s *Sealer) Open(sealed []byte, label string) ([]byte, error) {
	if !bytes.HasPrefix(sealed, []byte(sealedPrefix)) {
		return nil, s.openError("it was not sealed by Vault Transit")
	}
	path := s.c.transit + "/decrypt/" + s.name
	out, err := s.c.write(context.Background(), path, s.name, map[string]any{
		"ciphertext": string(sealed),
		"context":    labelContext(label),
	})
	if isDataError(err) {
		return nil, s.openError(cause(err))
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s with vault key %s: %w", label, s.name, err)
	}
	if out == nil || out.Data == nil {
		return nil, fmt.Errorf("opening %s with vault key %s: Vault returned nothing", label, s.name)
	}
	b64, _ := out.Data["plaintext"].(string)
	pt, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("opening %s with vault key %s: Vault returned bad plaintext: %w", label, s.name, err)
	}
	return pt, nil
}

// Rewrap re-encrypts sealed under the latest key version without the
// plaintext leaving Vault. The label must be the one it was sealed under.
func (s *Sealer) Rewrap(sealed []byte, label string) ([]byte, error) {
	if !bytes.HasPrefix(sealed, []byte(sealedPrefix)) {
		return nil, s.openError("it was not sealed by Vault Transit")
	}
	path := s.c.transit + "/rewrap/" + s.name
	out, err := s.c.write(context.Background(), path, s.name, map[string]any{
		"ciphertext": string(sealed),
		"context":    labelContext(label),
	})
	if isDataError(err) {
		return nil, s.openError(cause(err))
	}
	if err != nil {
		return nil, fmt.Errorf("rewrapping %s with vault key %s: %w", label, s.name, err)
	}
	return s.ciphertext(out, "rewrapping "+label)
}

// Rotate adds a new version to the key, which seals from now on, and
// returns its number.
func (s *Sealer) Rotate(ctx context.Context) (int, error) {
	if _, err := s.c.write(ctx, s.c.transit+"/keys/"+s.name+"/rotate", s.name, nil); err != nil {
		return 0, fmt.Errorf("rotating vault key %s: %w", s.name, err)
	}
	info, err := s.c.readKey(ctx, s.name)
	if err != nil {
		return 0, fmt.Errorf("rotating vault key %s: %w", s.name, err)
	}
	return info.LatestVersion, nil
}

// LatestVersion returns the key version that seals now.
func (s *Sealer) LatestVersion(ctx context.Context) (int, error) {
	info, err := s.c.readKey(ctx, s.name)
	if err != nil {
		return 0, err
	}
	return info.LatestVersion, nil
}

// SealedVersion returns the key version a value made by Sealer was sealed
// under, so a rewrap pass can skip values already at the latest version.
func SealedVersion(sealed []byte) (int, error) {
	v, _, err := parseVersioned(string(sealed))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", seal.ErrOpen, err)
	}
	return v, nil
}

func (s *Sealer) ciphertext(out *vault.Secret, op string) ([]byte, error) {
	var ct string
	if out != nil {
		ct, _ = out.Data["ciphertext"].(string)
	}
	if _, _, err := parseVersioned(ct); err != nil {
		return nil, fmt.Errorf("%s with vault key %s: Vault returned a bad ciphertext: %w", op, s.name, err)
	}
	return []byte(ct), nil
}

// openError matches seal.ErrOpen.
func (s *Sealer) openError(why string) error {
	return &openError{key: s.name, why: why}
}

type openError struct{ key, why string }

func (e *openError) Error() string {
	return fmt.Sprintf("%v (vault key %s: %s)", seal.ErrOpen, e.key, e.why)
}

func (e *openError) Is(target error) bool { return target == seal.ErrOpen }
