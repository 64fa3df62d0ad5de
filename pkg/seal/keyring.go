package seal

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KeyID names a KEK without revealing it: the first 8 bytes of
// SHA-256("tunnel-kek-id\x00" || key). It is printed as 16 hex digits.
type KeyID [idSize]byte

// String returns the ID in hex.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

func keyIDOf(key []byte) KeyID {
	sum := sha256.Sum256(append([]byte("tunnel-kek-id\x00"), key...))
	var id KeyID
	copy(id[:], sum[:idSize])
	return id
}

// SealedKeyID returns the ID of the KEK that sealed a version 2 value; ok is
// false for a version 1 value (or anything else), which does not say.
func SealedKeyID(sealed []byte) (id KeyID, ok bool) {
	if len(sealed) < 1+idSize || sealed[0] != version2 {
		return KeyID{}, false
	}
	copy(id[:], sealed[1:1+idSize])
	return id, true
}

// wrongKeyError is ErrOpen for a value sealed under a KEK that is not at
// hand: it names the key that is needed.
type wrongKeyError struct {
	want KeyID
	have []KeyID
}

func (e *wrongKeyError) Error() string {
	have := make([]string, len(e.have))
	for i, h := range e.have {
		have[i] = h.String()
	}
	return fmt.Sprintf("%v (the value is sealed with key-encryption key ID %s; this KEK has ID %s)", ErrOpen, e.want, strings.Join(have, ", "))
}

func (e *wrongKeyError) Is(target error) bool { return target == ErrOpen }

// MissingKeyID returns the ID of the KEK that an Open error says is
// needed, if it says.
func MissingKeyID(err error) (KeyID, bool) {
	var w *wrongKeyError
	if errors.As(err, &w) {
		return w.want, true
	}
	return KeyID{}, false
}

// Keyring seals with its first key and opens with any of its keys: what a
// KEK rotation needs while values sealed under the old key remain.
type Keyring struct {
	keys []*AESGCM
}

// NewKeyring returns a keyring of keys (each KeySize bytes), the first
// sealing. rand is the nonce source; nil means crypto/rand.
func NewKeyring(keys [][]byte, rand io.Reader) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: a keyring needs a key")
	}
	kr := &Keyring{}
	for _, k := range keys {
		s, err := NewAESGCM(k, rand)
		if err != nil {
			return nil, err
		}
		s.tagged = true
		kr.keys = append(kr.keys, s)
	}
	return kr, nil
}

// IDs returns the IDs of the keys, the sealing one first.
func (kr *Keyring) IDs() []KeyID {
	ids := make([]KeyID, len(kr.keys))
	for i, k := range kr.keys {
		ids[i] = k.id
	}
	return ids
}

// Seal implements Sealer with the first key (version 2).
func (kr *Keyring) Seal(plaintext []byte, label string) ([]byte, error) {
	return kr.keys[0].Seal(plaintext, label)
}

// Open implements Sealer: a version 2 value with the key it names, a
// version 1 value with each key in turn.
func (kr *Keyring) Open(sealed []byte, label string) ([]byte, error) {
	if id, ok := SealedKeyID(sealed); ok {
		for _, k := range kr.keys {
			if k.id == id {
				return k.Open(sealed, label)
			}
		}
		return nil, &wrongKeyError{want: id, have: kr.IDs()}
	}
	for _, k := range kr.keys {
		if pt, err := k.Open(sealed, label); err == nil {
			return pt, nil
		}
	}
	return nil, ErrOpen
}

// KeyFile is the Sealer of a KEK file: one hex key per line, the first
// sealing, the others (during a rotation) only opening. It reloads the file
// when it changes, so that a gateway keeps working while tunnel-gateway kek
// rotate adds a key, re-seals everything and drops the old one.
type KeyFile struct {
	path string

	mu    sync.Mutex
	ring  *Keyring
	stamp fileStamp
}

var _ Sealer = (*KeyFile)(nil)

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(fi fs.FileInfo) fileStamp {
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = uint64(sys.Ino)
	}
	return st
}

// HintFile is the name, beside a KEK file, of the note tunnel-gateway
// restore leaves when it restores a store whose KEK is not there yet: it
// holds the IDs of the keys the store's values are sealed with.
const HintFile = "kek.required"

// NewKeyFileSealer reads a KEK file and returns its Sealer. It refuses a
// file that group or others can read, since the key unlocks every secret.
func NewKeyFileSealer(path string) (*KeyFile, error) {
	ring, stamp, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return &KeyFile{path: path, ring: ring, stamp: stamp}, nil
}

// Path returns the file's path.
func (f *KeyFile) Path() string { return f.path }

// Keyring returns the keys as last read.
func (f *KeyFile) Keyring() *Keyring {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ring
}

// refresh rereads the file if it changed. A file that changed (or is
// gone) but cannot be read leaves the keys as they were, for opening, and
// returns the error, for sealing.
func (f *KeyFile) refresh() (*Keyring, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		return f.ring, f.unreadable(err)
	}
	if stampOf(fi) == f.stamp {
		return f.ring, nil
	}
	ring, stamp, err := readKeyFile(f.path)
	if err != nil {
		return f.ring, f.unreadable(err)
	}
	f.ring, f.stamp = ring, stamp
	return f.ring, nil
}

// ErrKeyFileUnreadable is returned by KeyFile.Seal when the KEK file
// changed but cannot be read.
var ErrKeyFileUnreadable = errors.New("the key-encryption key file changed but cannot be read")

func (f *KeyFile) unreadable(err error) error {
	return fmt.Errorf("%w, so nothing is sealed until it can be: a value sealed with the key last read might be lost when tunnel-gateway kek rotate drops that key; give this gateway's user read access to %s (it must own it, mode 0600): %w",
		ErrKeyFileUnreadable, f.path, err)
}

// Seal implements Sealer with the file's first key, as the file is now. It
// refuses to seal when the file changed but cannot be read: the key it
// would seal with may be gone from the file.
func (f *KeyFile) Seal(plaintext []byte, label string) ([]byte, error) {
	ring, err := f.refresh()
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", label, err)
	}
	return ring.Seal(plaintext, label)
}

// Open implements Sealer with any key of the file.
func (f *KeyFile) Open(sealed []byte, label string) ([]byte, error) {
	pt, err := f.Keyring().Open(sealed, label)
	if _, missing := MissingKeyID(err); missing {
		ring, _ := f.refresh()
		return ring.Open(sealed, label)
	}
	return pt, err
}

func readKeyFile(path string) (*Keyring, fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if ids := readHint(path); ids != "" {
				return nil, fileStamp{}, fmt.Errorf("the backup's secrets are sealed with key-encryption key ID %s: copy the KEK file from the original gateway to %s (or give --kek-file)", ids, path)
			}
			return nil, fileStamp{}, fmt.Errorf("key-encryption key file %s does not exist: run tunnel-gateway init, or give --kek-file", path)
		}
		return nil, fileStamp{}, fmt.Errorf("read key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fileStamp{}, fmt.Errorf("key-encryption key file %s is readable by others (mode %#o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("read key file: %w", err)
	}
	keys, err := parseKeys(b)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("key file %s does not hold a %d-byte hex key", path, KeySize)
	}
	ring, err := NewKeyring(keys, nil)
	if err != nil {
		return nil, fileStamp{}, err
	}
	return ring, stampOf(fi), nil
}

// readHint returns the key IDs of the hint file beside path, or "".
func readHint(path string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(path), HintFile))
	if err != nil || len(b) > 4096 {
		return ""
	}
	return strings.Join(strings.Fields(string(b)), ", ")
}

func parseKeys(b []byte) ([][]byte, error) {
	var keys [][]byte
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || len(k) != KeySize {
			return nil, errors.New("bad key")
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return keys, nil
}

// ReadKeys returns the keys of a KEK file, the sealing one first, with the
// same checks as NewKeyFileSealer.
func ReadKeys(path string) ([][]byte, error) {
	if _, _, err := readKeyFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	return parseKeys(b)
}

// NewKey returns a random KEK.
func NewKey(r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(r, key); err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	return key, nil
}

// IDOf returns the ID of a key.
func IDOf(key []byte) KeyID { return keyIDOf(key) }

// WriteKeyFile replaces the KEK file at path with keys (the sealing one
// first), atomically: a temporary file (0600, with the owner and group of
// the file it replaces) synced and renamed over it, then the directory
// synced. A crash leaves the old file or the new one. It refuses to replace
// a file whose owner it cannot give the new one (a gateway running as that
// user could no longer read its KEK).
func WriteKeyFile(path string, keys [][]byte) error {
	var sb strings.Builder
	for _, k := range keys {
		if len(k) != KeySize {
			return fmt.Errorf("write key file: key is %d bytes, want %d", len(k), KeySize)
		}
		sb.WriteString(hex.EncodeToString(k) + "\n")
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".kek-*.tmp")
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := keepOwner(tmp, path); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(sb.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// keepOwner gives tmp the owner and group of the file at path, if there is
// one, so that a gateway running as that user can still read its KEK
// after root replaces it.
func keepOwner(tmp *os.File, path string) error {
	old, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	cur, err := tmp.Stat()
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	o, ok1 := old.Sys().(*syscall.Stat_t)
	c, ok2 := cur.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 || (o.Uid == c.Uid && o.Gid == c.Gid) {
		return nil
	}
	if err := tmp.Chown(int(o.Uid), int(o.Gid)); err != nil {
		return fmt.Errorf("the key-encryption key file %s belongs to uid %d, gid %d, and its replacement cannot be given that owner (%w): run this as root or as that user, so that the gateway can still read the file", path, o.Uid, o.Gid, err)
	}
	return nil
}
