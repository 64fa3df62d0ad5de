package vaultkeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
)

// Signer is a crypto.Signer whose private key stays in Vault's Transit
// engine: an Ed25519 key (KeyEd25519), or an ECDSA P-256 key
// (KeyECDSAP256), which signs a SHA-256 digest the caller made (Transit's
// prehashed signing, with ASN.1 signatures, what crypto.Signer returns for
// ECDSA). It is pinned to one key version, the latest when it was made:
// Public returns that version's public key and every signature is made
// with it, so a rotation in Vault never yields signatures that the
// advertised CA key does not verify (make a new Signer to use the new
// version). Each signature is checked against the public key before it is
// returned. It is safe for concurrent use.
type Signer struct {
	c       *Client
	name    string
	typ     KeyType
	version int
	pub     crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey on P-256
	signs   atomic.Int64
}

// NewSigner returns a Signer for the latest version of the Transit key
// name, an Ed25519 or ECDSA P-256 key (its type is read from Vault). A
// missing key is ErrKeyMissing.
func NewSigner(ctx context.Context, c *Client, name string) (*Signer, error) {
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	info, err := c.readKey(ctx, name)
	if err != nil {
		return nil, err
	}
	typ := KeyType(info.Type)
	if typ != KeyECDSAP256 {
		typ = KeyEd25519 // any other type is refused by check, naming this one
	}
	if err := info.check(typ); err != nil {
		return nil, err
	}
	raw, err := info.publicKey(info.LatestVersion)
	if err != nil {
		return nil, err
	}
	s := &Signer{c: c, name: name, typ: typ, version: info.LatestVersion}
	switch typ {
	case KeyEd25519:
		pub, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			return nil, fmt.Errorf("vault: Transit key %q version %d: public key is not base64: %w", name, info.LatestVersion, err)
		}
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("vault: Transit key %q version %d has a %d-byte public key, not an Ed25519 one", name, info.LatestVersion, len(pub))
		}
		s.pub = ed25519.PublicKey(pub)
	case KeyECDSAP256:
		if s.pub, err = parseP256(raw); err != nil {
			return nil, fmt.Errorf("vault: Transit key %q version %d: %w", name, info.LatestVersion, err)
		}
	}
	return s, nil
}

// parseP256 parses the PEM public key Transit gives for an ECDSA key.
func parseP256(s string) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("the public key is not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the public key: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("the public key is %T, not ECDSA P-256", k)
	}
	return pub, nil
}

// Public returns the public key of the pinned version: ed25519.PublicKey
// or *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// KeyType returns the Transit key's type: KeyEd25519 or KeyECDSAP256.
func (s *Signer) KeyType() KeyType { return s.typ }

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

// Sign implements crypto.Signer through transit/sign. An Ed25519 key signs
// the message itself (opts.HashFunc() must be 0); an ECDSA P-256 key signs
// digest, a SHA-256 hash (opts.HashFunc() must be crypto.SHA256), and
// returns an ASN.1 signature. rand is ignored: Vault signs. Its context is
// the client's: Close cancels it, and Config.Timeout bounds it.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var h crypto.Hash
	if opts != nil {
		h = opts.HashFunc()
	}
	switch s.typ {
	case KeyECDSAP256:
		if h != crypto.SHA256 || len(digest) != sha256.Size {
			return nil, fmt.Errorf("vault: Transit key %q is ECDSA P-256, which signs a SHA-256 digest, not a %v one of %d bytes", s.name, h, len(digest))
		}
	default:
		if h != 0 {
			return nil, fmt.Errorf("vault: Transit key %q is Ed25519, which signs the message, not a %v digest", s.name, h)
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return nil, errors.New("vault: Ed25519ctx is not supported by Transit")
		}
	}
	sig, _, err := s.sign(context.Background(), digest)
	return sig, err
}

// SignContext signs message (hashed with SHA-256 first for an ECDSA key)
// and returns the signature and the key version that made it.
func (s *Signer) SignContext(ctx context.Context, message []byte) (sig []byte, version int, err error) {
	if s.typ == KeyECDSAP256 {
		d := sha256.Sum256(message)
		return s.sign(ctx, d[:])
	}
	return s.sign(ctx, message)
}

// sign sends input (the message for Ed25519, the SHA-256 digest for
// ECDSA) to transit/sign and checks the signature.
func (s *Signer) sign(ctx context.Context, input []byte) (sig []byte, version int, err error) {
	path := s.c.transit + "/sign/" + s.name
	req := map[string]any{
		"input":       base64.StdEncoding.EncodeToString(input),
		"key_version": s.version,
	}
	if s.typ == KeyECDSAP256 {
		req["prehashed"] = true
		req["hash_algorithm"] = "sha2-256"
		req["marshaling_algorithm"] = "asn1"
	}
	out, err := s.c.write(ctx, path, s.name, req)
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
	var ok bool
	switch pub := s.pub.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, input, sig)
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, input, sig)
	}
	if !ok {
		return nil, 0, fmt.Errorf("signing with %s: the signature from Vault does not verify with the key's public key", s.Describe())
	}
	s.signs.Add(1)
	return sig, v, nil
}
