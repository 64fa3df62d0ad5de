// Package seal encrypts secrets at rest: CA private keys, TOTP secrets and
// anything else the gateway must store but never in the clear.
//
// A [Sealer] seals a plaintext with AES-256-GCM under a key-encryption key
// (KEK), binding it to a label (the additional authenticated data) so that a
// sealed value moved to another place in the store no longer opens. Use
// [NewKeyFileSealer] with a 0600 key file (created by [CreateKeyFile]); a
// Vault Transit sealer satisfies the same interface.
//
// Sealed formats:
//
//	version 1: 0x01 || 12-byte nonce || ciphertext||tag
//	version 2: 0x02 || 8-byte key ID || 12-byte nonce || ciphertext||tag
//
// Version 2 names the KEK that sealed the value ([KeyID]), so that during a
// KEK rotation (keyring.go) a value opens with the right one of several keys
// and a value nobody can open says which key is missing. [NewAESGCM] still
// seals version 1; the key file sealer ([NewKeyFileSealer]) seals version
// 2; both open either.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"os"
)

// Sealer seals and opens secrets bound to a label.
type Sealer interface {
	// Seal encrypts plaintext; label names what it is (for example
	// "ca/ssh-user" or "totp/alice") and must be given again to Open.
	Seal(plaintext []byte, label string) ([]byte, error)
	// Open decrypts a value made by Seal with the same label. It fails with
	// ErrOpen if the value was altered, the label differs or the key is wrong.
	Open(sealed []byte, label string) ([]byte, error)
}

// ErrOpen is returned when a sealed value cannot be opened.
var ErrOpen = errors.New("sealed value cannot be opened: it was altered, or sealed under another key")

const (
	version1  = 0x01
	version2  = 0x02
	idSize    = 8
	nonceSize = 12
	// KeySize is the length of a KEK in bytes (AES-256).
	KeySize = 32
)

// AESGCM seals with AES-256-GCM under a key held in memory.
type AESGCM struct {
	aead cipher.AEAD
	rand io.Reader
	id   KeyID
	// tagged makes Seal write version 2 (with the key ID).
	tagged bool
}

// NewAESGCM returns a Sealer using key, which must be KeySize bytes. rand is
// the nonce source; nil means crypto/rand.
func NewAESGCM(key []byte, rand io.Reader) (*AESGCM, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &AESGCM{aead: aead, rand: rand, id: keyIDOf(key)}, nil
}

// ID returns the key's ID.
func (s *AESGCM) ID() KeyID { return s.id }

// Seal implements Sealer.
func (s *AESGCM) Seal(plaintext []byte, label string) ([]byte, error) {
	r := s.rand
	if r == nil {
		r = rand.Reader
	}
	if s.tagged {
		out := make([]byte, 1+idSize+nonceSize, 1+idSize+nonceSize+len(plaintext)+s.aead.Overhead())
		out[0] = version2
		copy(out[1:1+idSize], s.id[:])
		nonce := out[1+idSize : 1+idSize+nonceSize]
		if _, err := io.ReadFull(r, nonce); err != nil {
			return nil, fmt.Errorf("seal: reading nonce: %w", err)
		}
		return s.aead.Seal(out, nonce, plaintext, aad2(s.id, label)), nil
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+s.aead.Overhead())
	out[0] = version1
	if _, err := io.ReadFull(r, out[1:1+nonceSize]); err != nil {
		return nil, fmt.Errorf("seal: reading nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:1+nonceSize], plaintext, aad(label)), nil
}

// Open implements Sealer.
func (s *AESGCM) Open(sealed []byte, label string) ([]byte, error) {
	if len(sealed) > 0 && sealed[0] == version2 {
		if len(sealed) < 1+idSize+nonceSize+s.aead.Overhead() {
			return nil, ErrOpen
		}
		id, _ := SealedKeyID(sealed)
		if id != s.id {
			return nil, &wrongKeyError{want: id, have: []KeyID{s.id}}
		}
		pt, err := s.aead.Open(nil, sealed[1+idSize:1+idSize+nonceSize], sealed[1+idSize+nonceSize:], aad2(id, label))
		if err != nil {
			return nil, ErrOpen
		}
		return pt, nil
	}
	if len(sealed) < 1+nonceSize+s.aead.Overhead() || sealed[0] != version1 {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], aad(label))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

func aad(label string) []byte { return []byte("tunnel-seal-v1\x00" + label) }

func aad2(id KeyID, label string) []byte {
	return append(append([]byte("tunnel-seal-v2\x00"), id[:]...), label...)
}

// CreateKeyFile writes a new random KEK to path (hex, mode 0600). It refuses
// to overwrite an existing file.
func CreateKeyFile(path string, rand io.Reader) error {
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(rand, key); err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("create key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	return nil
}
