package seal_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

func TestKeyringFormat2(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	ring, err := seal.NewKeyring([][]byte{k1, k2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := ring.Seal([]byte("secret"), "totp/alice")
	if err != nil {
		t.Fatal(err)
	}
	// Version 2: the version byte, the sealing key's ID, then as version 1.
	if sealed[0] != 0x02 || len(sealed) != 1+8+nonceSize+len("secret")+tagSize {
		t.Fatalf("sealed = %x; want version 2 with a key ID", sealed)
	}
	id, ok := seal.SealedKeyID(sealed)
	if !ok || id != seal.IDOf(k1) || !bytes.Equal(sealed[1:9], id[:]) {
		t.Errorf("SealedKeyID = %v, %v; want the first key's %v", id, ok, seal.IDOf(k1))
	}
	if pt, err := ring.Open(sealed, "totp/alice"); err != nil || string(pt) != "secret" {
		t.Errorf("Open = %q, %v", pt, err)
	}
	// A key alone opens what it sealed, in either format.
	if pt, err := newSealer(t, k1).Open(sealed, "totp/alice"); err != nil || string(pt) != "secret" {
		t.Errorf("the key alone: %q, %v", pt, err)
	}
	v1, err := newSealer(t, k2).Seal([]byte("old"), "ca/x509")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := seal.SealedKeyID(v1); ok {
		t.Errorf("a version 1 value has a key ID")
	}
	if pt, err := ring.Open(v1, "ca/x509"); err != nil || string(pt) != "old" {
		t.Errorf("the keyring opens a version 1 value of its second key: %q, %v", pt, err)
	}

	// Another key names the one needed.
	other, err := seal.NewKeyring([][]byte{k2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Open(sealed, "totp/alice")
	if !errors.Is(err, seal.ErrOpen) || !strings.Contains(err.Error(), "sealed with key-encryption key ID "+seal.IDOf(k1).String()) ||
		!strings.Contains(err.Error(), "this KEK has ID "+seal.IDOf(k2).String()) {
		t.Errorf("Open with another key: %v", err)
	}
	if got, ok := seal.MissingKeyID(err); !ok || got != seal.IDOf(k1) {
		t.Errorf("MissingKeyID = %v, %v", got, ok)
	}
	// Altered: the ID, the label, any byte.
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 0x80
		if _, err := ring.Open(b, "totp/alice"); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("byte %d flipped: %v; want ErrOpen", i, err)
		}
	}
	if _, err := ring.Open(sealed, "totp/bob"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("another label: %v", err)
	}
	if _, err := ring.Open(sealed[:12], "totp/alice"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("truncated: %v", err)
	}
}

// TestKeyFileReloads: a KeyFile follows its file as kek rotate rewrites it.
func TestKeyFileReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	k1, k2 := newKey(t), newKey(t)
	if err := seal.WriteKeyFile(path, [][]byte{k1}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("WriteKeyFile: mode %v, %v; want 0600", fi.Mode(), err)
	}
	kf, err := seal.NewKeyFileSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kf.Seal([]byte("a"), "l")
	if err != nil {
		t.Fatal(err)
	}
	// Another process adds a new key at the head and seals with it.
	if err := seal.WriteKeyFile(path, [][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	b, err := seal.NewKeyring([][]byte{k2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bSealed, _ := b.Seal([]byte("b"), "l")
	if pt, err := kf.Open(bSealed, "l"); err != nil || string(pt) != "b" {
		t.Errorf("open a value of the new key: %q, %v", pt, err)
	}
	if pt, err := kf.Open(a, "l"); err != nil || string(pt) != "a" {
		t.Errorf("open a value of the old key: %q, %v", pt, err)
	}
	c, _ := kf.Seal([]byte("c"), "l")
	if id, _ := seal.SealedKeyID(c); id != seal.IDOf(k2) {
		t.Errorf("after the change Seal uses key %v; want the new %v", id, seal.IDOf(k2))
	}
	// The old key dropped.
	if err := seal.WriteKeyFile(path, [][]byte{k2}); err != nil {
		t.Fatal(err)
	}
	if _, err := kf.Seal([]byte("d"), "l"); err != nil {
		t.Fatal(err)
	}
	if ids := kf.Keyring().IDs(); len(ids) != 1 || ids[0] != seal.IDOf(k2) {
		t.Errorf("keys after the old one is dropped: %v", ids)
	}
	keys, err := seal.ReadKeys(path)
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], k2) {
		t.Errorf("ReadKeys = %d keys, %v", len(keys), err)
	}
	// A file that cannot be read keeps the keys as they were.
	os.Remove(path)
	if pt, err := kf.Open(c, "l"); err != nil || string(pt) != "c" {
		t.Errorf("open after the file is gone: %q, %v", pt, err)
	}
	// A bad line is refused, without showing the key.
	os.WriteFile(path, []byte(strings.Repeat("ab", 32)+"\nnot hex\n"), 0o600)
	if _, err := seal.NewKeyFileSealer(path); err == nil || strings.Contains(err.Error(), "abab") {
		t.Errorf("a file with a bad line: %v", err)
	}
}

// TestKeyFileHint: after a restore without its KEK, the missing file's
// error names the key the store needs.
func TestKeyFileHint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	if err := os.WriteFile(filepath.Join(dir, seal.HintFile), []byte("0011223344556677\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := seal.NewKeyFileSealer(path)
	want := "the backup's secrets are sealed with key-encryption key ID 0011223344556677: copy the KEK file from the original gateway to " + path
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("NewKeyFileSealer without the KEK: %v; want %q", err, want)
	}
}

// TestKeyFileRefusesSealWhenUnreadable: a gateway whose KEK file changed
// but cannot be read refuses to seal (with the key it read last, a value
// would be lost once kek rotate drops that key), still opens with the keys
// it has, and seals with the new key once it can read the file.
func TestKeyFileRefusesSealWhenUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	k1, k2 := newKey(t), newKey(t)
	if err := seal.WriteKeyFile(path, [][]byte{k1}); err != nil {
		t.Fatal(err)
	}
	kf, err := seal.NewKeyFileSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kf.Seal([]byte("a"), "l")
	if err != nil {
		t.Fatal(err)
	}
	// kek rotate writes the new key at the head, but the gateway cannot
	// read the new file (here: a mode it refuses; as root, the owner would
	// not stop a read).
	if err := seal.WriteKeyFile(path, [][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = kf.Seal([]byte("b"), "totp/carol")
	if !errors.Is(err, seal.ErrKeyFileUnreadable) || !strings.Contains(err.Error(), "give this gateway's user read access to "+path) {
		t.Fatalf("Seal with an unreadable changed file: %v; want refused", err)
	}
	if pt, err := kf.Open(a, "l"); err != nil || string(pt) != "a" {
		t.Errorf("Open with an unreadable changed file: %q, %v", pt, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := kf.Seal([]byte("b"), "l")
	if err != nil {
		t.Fatalf("Seal once the file reads again: %v", err)
	}
	if id, _ := seal.SealedKeyID(b); id != seal.IDOf(k2) {
		t.Errorf("Seal uses key %v; want the new %v", id, seal.IDOf(k2))
	}
	// A file that is gone: nothing is sealed either.
	os.Remove(path)
	if _, err := kf.Seal([]byte("c"), "l"); !errors.Is(err, seal.ErrKeyFileUnreadable) {
		t.Errorf("Seal with the file gone: %v; want refused", err)
	}
}

// TestWriteKeyFileKeepsOwner: root replacing the KEK file of a gateway that
// runs as another user (systemd DynamicUser) keeps the file that user's.
func TestWriteKeyFileKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	path := filepath.Join(t.TempDir(), "kek")
	if err := seal.WriteKeyFile(path, [][]byte{newKey(t)}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65533); err != nil {
		t.Fatal(err)
	}
	if err := seal.WriteKeyFile(path, [][]byte{newKey(t), newKey(t)}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65533 || fi.Mode().Perm() != 0o600 {
		t.Errorf("after WriteKeyFile the file is uid %d gid %d mode %v; want 65534, 65533, 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
