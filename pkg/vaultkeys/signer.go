package vaultkeys

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
)

// Signer is a crypto.Signer whose Ed25519 private key stays in Vault's
// Transit engine. It is pinned to one key version, the latest when it was
// made: Public returns that version's public key and every signature is
// made with it, so a rotation in Vault never yields signatures that the
// advertised CA key does not verify (make a new Signer to use the new
// version). Each signature is checked against the public key before it is
// returned. It is safe for concurrent use.
type Signer struct {
	c       *Client
	name    string
	version int
	pub     ed25519.PublicKey
	signs   atomic.Int64
}

// NewSigner returns a Signer for the latest version of the Ed25519 Transit
// key name. A missing key is ErrKeyMissing.
func NewSigner(ctx context.Context, c *Client, name string) (*Signer, error) {
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	info, err := c.readKey(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := info.check(KeyEd25519); err != nil {
		return nil, err
	}
	pub, err := info.publicKey(info.LatestVersion)
	if err != nil {
		return nil, err
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("vault: Transit key %q version %d has a %d-byte public key, not an Ed25519 one", name, info.LatestVersion, len(pub))
	}
	return &Signer{c: c, name: name, version: info.LatestVersion, pub: ed25519.PublicKey(pub)}, nil
}

// Public returns the Ed25519 public key of the pinned version.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// KeyName returns the Transit key's name.
func (s *Signer) KeyName() string { return s.name }

// RefPrefix starts Ref's answer.
const RefPrefix = "vault-transit:"

// Ref names the key for a store that keeps where a CA key lives
// ("vault-transit:NAME"); ParseRef reads it back.
func (s *Signer) Ref() string { return RefPrefix + s.name }

// ParseRef returns the key name of a Ref, and false if ref is not one.
func ParseRef(ref string) (string, bool) {
	name, ok := strings.CutPrefix(ref, RefPrefix)
	return name, ok && name != ""
}

// Version returns the key version that makes every signature.
func (s *Signer) Version() int { return s.version }

// Describe names the key for audit events: "vault key NAME version N".
func (s *Signer) Describe() string {
	return fmt.Sprintf("vault key %s version %d", s.name, s.version)
}

// Signatures returns how many signatures Vault made for this Signer.
func (s *Signer) Signatures() int64 { return s.signs.Load() }

// Sign signs message (Ed25519 signs the message itself, so opts.HashFunc()
// must be 0) through transit/sign. rand is ignored: Vault signs. Its
// context is the client's: Close cancels it, and Config.Timeout bounds it.
func (s *Signer) Sign(_ io.Reader, message []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != 0 {
		return nil, fmt.Errorf("vault: Transit key %q is Ed25519, which signs the message, not a %v digest", s.name, opts.HashFunc())
	}
	if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
		return nil, errors.New("vault: Ed25519ctx is not supported by Transit")
	}
	sig, _, err := s.SignContext(context.Background(), message)
	return sig, err
}

// SignContext signs message and returns the signature and the key version
// that made it.
func (s *Signer) SignContext(ctx context.Context, message []byte) (sig []byte, version int, err error) {
	path := s.c.transit + "/sign/" + s.name
	out, err := s.c.write(ctx, path, s.name, map[string]any{
		"input":       base64.StdEncoding.EncodeToString(message),
		"key_version": s.version,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("signing with %s: %w", s.Describe(), err)
	}
	if out == nil || out.Data == nil {
		return nil, 0, fmt.Errorf("signing with %s: Vault returned no signature", s.Describe())
	}
	str, _ := out.Data["signature"].(string)
	v, sig, err := parseVersioned(str)
	if err != nil {
		return nil, 0, fmt.Errorf("signing with %s: Vault returned a bad signature: %w", s.Describe(), err)
	}
	if v != s.version {
		return nil, 0, fmt.Errorf("signing with %s: Vault signed with version %d instead", s.Describe(), v)
	}
	if !ed25519.Verify(s.pub, message, sig) {
		return nil, 0, fmt.Errorf("signing with %s: the signature from Vault does not verify with the key's public key", s.Describe())
	}
	s.signs.Add(1)
	return sig, v, nil
}
