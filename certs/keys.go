package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"
)

// Only two key types are signed or used as CA keys: Ed25519 and ECDSA on
// P-256. A new cluster's X.509 CA is ECDSA P-256, because browsers accept
// no Ed25519 in a TLS certificate chain (the web console is served under
// a certificate of that CA); its SSH CAs are Ed25519. A cluster made
// before that keeps its Ed25519 X.509 CA, recognised by its type when
// loaded, until a rotation replaces it with an ECDSA one (NewCAKey).

// newEd25519Key makes an Ed25519 key from 32 bytes of r.
func newEd25519Key(r io.Reader) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("generating an Ed25519 key: %w", err)
	}
	return priv, nil
}

// newP256Key makes an ECDSA P-256 key. With crypto/rand's reader it is
// ecdsa.GenerateKey; with another source (Config.Rand, in tests) the
// scalar is drawn from r by rejection sampling (FIPS 186-5 A.2.2: 32
// bytes, drawn again unless 0 < d < n), because since Go 1.26
// ecdsa.GenerateKey ignores a reader other than the system's, and a seeded
// Config.Rand must give the same keys.
func newP256Key(r io.Reader, defaultReader bool) (*ecdsa.PrivateKey, error) {
	if defaultReader {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating an ECDSA P-256 key: %w", err)
		}
		return k, nil
	}
	var d [32]byte
	defer clear(d[:])
	for range maxSerialTries {
		if _, err := io.ReadFull(r, d[:]); err != nil {
			return nil, fmt.Errorf("generating an ECDSA P-256 key: %w", err)
		}
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:]); err == nil {
			return k, nil
		}
	}
	// A draw falls outside [1, n-1] with a probability below 2^-32.
	return nil, errors.New("generating an ECDSA P-256 key: the random source returns only zeros or out-of-range values")
}

// caKeyType names the type of a CA key for people: "ECDSA P-256" or
// "Ed25519".
func caKeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return "Ed25519"
	case *ecdsa.PublicKey:
		if k != nil && k.Curve != nil {
			return "ECDSA " + curveName(k.Curve)
		}
	}
	return keyTypeName(pub)
}

// checkPublicKey checks that pub is an Ed25519 or ECDSA P-256 public key.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case nil:
		return fmt.Errorf("%w: no public key", ErrInvalidRequest)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: Ed25519 public key is %d bytes, want %d", ErrInvalidRequest, len(k), ed25519.PublicKeySize)
		}
		return nil
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return fmt.Errorf("%w: no public key", ErrInvalidRequest)
		}
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ECDSA keys on %s are not supported: use P-256 or Ed25519", ErrUnsupportedKey, curveName(k.Curve))
		}
		if k.X == nil || k.Y == nil {
			return fmt.Errorf("%w: ECDSA public key has no point", ErrInvalidRequest)
		}
		if _, err := k.ECDH(); err != nil {
			return fmt.Errorf("%w: ECDSA public key is not a valid P-256 point", ErrInvalidRequest)
		}
		return nil
	case crypto.Signer:
		return fmt.Errorf("%w: a private key was given where the public key belongs", ErrInvalidRequest)
	default:
		return fmt.Errorf("%w: %s keys are not supported: use Ed25519 or ECDSA P-256", ErrUnsupportedKey, keyTypeName(pub))
	}
}

func curveName(c elliptic.Curve) string {
	if p := c.Params(); p != nil && p.Name != "" {
		return p.Name
	}
	return "an unknown curve"
}

func keyTypeName(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ed25519.PublicKey:
		return "*ed25519.PublicKey (pass the value, not a pointer)"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

// checkSSHKey checks that pub is a plain ssh-ed25519 or ecdsa-sha2-nistp256
// key and returns it re-parsed from its wire form, so that only keys this
// package understands are signed.
func checkSSHKey(pub ssh.PublicKey) (ssh.PublicKey, error) {
	if pub == nil {
		return nil, fmt.Errorf("%w: no public key", ErrInvalidRequest)
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, fmt.Errorf("%w: an SSH certificate cannot be certified; send the plain public key", ErrUnsupportedKey)
	}
	switch t := pub.Type(); t {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256:
	default:
		return nil, fmt.Errorf("%w: %q keys are not supported: use ssh-ed25519 or ecdsa-sha2-nistp256", ErrUnsupportedKey, t)
	}
	out, err := ssh.ParsePublicKey(pub.Marshal())
	if err != nil {
		return nil, fmt.Errorf("%w: malformed SSH public key: %w", ErrInvalidRequest, err)
	}
	if out.Type() != pub.Type() {
		return nil, fmt.Errorf("%w: SSH public key claims type %q but is %q", ErrInvalidRequest, pub.Type(), out.Type())
	}
	return out, nil
}

// parseCACert parses a stored X.509 CA certificate.
func parseCACert(der []byte) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("stored X.509 certificate is not a CA certificate")
	}
	if err := checkPublicKey(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return cert, nil
}

// parseSSHCAKey parses a stored SSH CA public key (wire format).
func parseSSHCAKey(b []byte) (ssh.PublicKey, error) {
	pub, err := ssh.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("parsing SSH CA public key: %w", err)
	}
	if _, err := checkSSHKey(pub); err != nil {
		return nil, fmt.Errorf("SSH CA public key: %w", err)
	}
	if _, ok := pub.(ssh.CryptoPublicKey); !ok {
		return nil, fmt.Errorf("SSH CA public key of type %q cannot be used", pub.Type())
	}
	return pub, nil
}

// parseCAPrivateKey parses a PKCS#8 CA private key.
func parseCAPrivateKey(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS#8: %w", err)
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s; want P-256", curveName(k.Curve))
		}
		return k, nil
	default:
		return nil, fmt.Errorf("%T keys cannot be CA keys: use Ed25519 or ECDSA P-256", k)
	}
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
