package seal_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newSealer(t testing.TB, key []byte) *seal.AESGCM {
	t.Helper()
	s, err := seal.NewAESGCM(key, nil)
	if err != nil {
		t.Fatalf("NewAESGCM: %v", err)
	}
	return s
}

const (
	nonceSize = 12
	tagSize   = 16
)

func TestRoundTrip(t *testing.T) {
	s := newSealer(t, newKey(t))
	for _, pt := range [][]byte{nil, {}, []byte("x"), []byte("JBSWY3DPEHPK3PXP"), bytes.Repeat([]byte{0xa5}, 4096)} {
		sealed, err := s.Seal(pt, "totp/alice")
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if got, want := len(sealed), 1+nonceSize+len(pt)+tagSize; got != want {
			t.Errorf("sealed %d bytes into %d; want %d", len(pt), got, want)
		}
		if sealed[0] != 0x01 {
			t.Errorf("got version byte %#x; want 0x01", sealed[0])
		}
		if len(pt) >= 4 && bytes.Contains(sealed, pt) {
			t.Errorf("the sealed value holds the plaintext")
		}
		got, err := s.Open(sealed, "totp/alice")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Errorf("got %q; want %q", got, pt)
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	s := newSealer(t, newKey(t))
	a, err := s.Seal([]byte("secret"), "l")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Seal([]byte("secret"), "l")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[1:1+nonceSize], b[1:1+nonceSize]) || bytes.Equal(a, b) {
		t.Errorf("two seals of the same plaintext share a nonce")
	}

	// The nonce comes from the given source.
	nonce := bytes.Repeat([]byte{7}, nonceSize)
	det, err := seal.NewAESGCM(newKey(t), bytes.NewReader(nonce))
	if err != nil {
		t.Fatal(err)
	}
	c, err := det.Seal([]byte("secret"), "l")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c[1:1+nonceSize], nonce) {
		t.Errorf("got nonce %x; want %x from the rand source", c[1:1+nonceSize], nonce)
	}
	// A source that fails makes Seal fail rather than reuse a nonce.
	if _, err := det.Seal([]byte("secret"), "l"); err == nil {
		t.Errorf("Seal with an exhausted rand source: got no error")
	}
	broken, err := seal.NewAESGCM(newKey(t), iotest.ErrReader(errors.New("no entropy")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broken.Seal([]byte("x"), "l"); err == nil || !strings.Contains(err.Error(), "no entropy") {
		t.Errorf("Seal with a failing rand source: got %v; want its error", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	key := newKey(t)
	s := newSealer(t, key)
	pt := []byte("a TOTP secret of some length")
	sealed, err := s.Seal(pt, "totp/alice")
	if err != nil {
		t.Fatal(err)
	}
	otherKey := newKey(t)
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name   string
		sealer *seal.AESGCM
		sealed []byte
		label  string
	}{
		{"version byte", s, flip(0), "totp/alice"},
		{"nonce first byte", s, flip(1), "totp/alice"},
		{"nonce last byte", s, flip(nonceSize), "totp/alice"},
		{"ciphertext first byte", s, flip(1 + nonceSize), "totp/alice"},
		{"ciphertext last byte", s, flip(len(sealed) - tagSize - 1), "totp/alice"},
		{"tag first byte", s, flip(len(sealed) - tagSize), "totp/alice"},
		{"tag last byte", s, flip(len(sealed) - 1), "totp/alice"},
		{"wrong label", s, sealed, "totp/bob"},
		{"label prefix", s, sealed, "totp/alic"},
		{"empty label", s, sealed, ""},
		{"wrong key", newSealer(t, otherKey), sealed, "totp/alice"},
		{"truncated by one", s, sealed[:len(sealed)-1], "totp/alice"},
		{"tag only", s, sealed[:1+nonceSize+tagSize], "totp/alice"},
		{"shorter than a tag", s, sealed[:1+nonceSize+tagSize-1], "totp/alice"},
		{"version only", s, sealed[:1], "totp/alice"},
		{"empty", s, nil, "totp/alice"},
		{"extended", s, append(bytes.Clone(sealed), 0), "totp/alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.sealer.Open(tc.sealed, tc.label)
			if !errors.Is(err, seal.ErrOpen) {
				t.Errorf("got %q, error %v; want ErrOpen", got, err)
			}
			if got != nil {
				t.Errorf("got plaintext %q with the error; want none", got)
			}
		})
	}

	// Every single-bit flip anywhere is refused.
	for i := range sealed {
		for bit := range 8 {
			b := bytes.Clone(sealed)
			b[i] ^= 1 << bit
			if _, err := s.Open(b, "totp/alice"); !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("flipping bit %d of byte %d: got %v; want ErrOpen", bit, i, err)
			}
		}
	}
}

func TestLabelsDoNotCollide(t *testing.T) {
	// The label is bound as additional data: nothing sealed for one label
	// opens under another, however the two are spelled.
	s := newSealer(t, newKey(t))
	labels := []string{"", "a", "a\x00", "ca/x509", "ca/ssh-user", "totp/alice", "totp/alice ", "TOTP/alice"}
	for _, l1 := range labels {
		sealed, err := s.Seal([]byte("v"), l1)
		if err != nil {
			t.Fatal(err)
		}
		for _, l2 := range labels {
			_, err := s.Open(sealed, l2)
			if (err == nil) != (l1 == l2) {
				t.Errorf("sealed with %q, opened with %q: got error %v", l1, l2, err)
			}
		}
	}
}

func TestNewAESGCMKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := seal.NewAESGCM(make([]byte, n), nil); err == nil {
			t.Errorf("NewAESGCM with a %d-byte key: got no error; want refused", n)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	if err := seal.CreateKeyFile(path, rand.Reader); err != nil {
		t.Fatalf("CreateKeyFile: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("got key file mode %#o; want 0600", got)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != seal.KeySize {
		t.Fatalf("key file holds %q; want %d hex bytes", b, seal.KeySize)
	}

	s1, err := seal.NewKeyFileSealer(path)
	if err != nil {
		t.Fatalf("NewKeyFileSealer: %v", err)
	}
	sealed, err := s1.Seal([]byte("secret"), "l")
	if err != nil {
		t.Fatal(err)
	}
	// The file's key is the key: a sealer made from the bytes opens it.
	if got, err := newSealer(t, key).Open(sealed, "l"); err != nil || string(got) != "secret" {
		t.Errorf("open with the file's key: got %q, %v", got, err)
	}

	// CreateKeyFile never overwrites.
	if err := seal.CreateKeyFile(path, rand.Reader); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateKeyFile over an existing file: got %v; want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
		t.Errorf("the refused CreateKeyFile changed the file")
	}
	// Nor creates a file when the rand source fails.
	failPath := filepath.Join(dir, "kek2")
	if err := seal.CreateKeyFile(failPath, iotest.ErrReader(errors.New("no entropy"))); err == nil {
		t.Errorf("CreateKeyFile with a failing rand source: got no error")
	}
	if _, err := os.Stat(failPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CreateKeyFile with a failing rand source left a file: %v", err)
	}
}

func TestKeyFileSealerRefuses(t *testing.T) {
	dir := t.TempDir()
	goodKey := hex.EncodeToString(newKey(t)) + "\n"
	tests := []struct {
		name      string
		content   string // "" means no file
		mode      os.FileMode
		fragments []string
	}{
		{name: "missing", fragments: []string{"does not exist", "tunnel-gateway init"}},
		{name: "mode 0644", content: goodKey, mode: 0o644, fragments: []string{"readable by others", "0644", "chmod 600"}},
		{name: "mode 0640", content: goodKey, mode: 0o640, fragments: []string{"chmod 600"}},
		{name: "mode 0604", content: goodKey, mode: 0o604, fragments: []string{"chmod 600"}},
		{name: "mode 0610", content: goodKey, mode: 0o610, fragments: []string{"chmod 600"}},
		{name: "not hex", content: strings.Repeat("zz", seal.KeySize), mode: 0o600, fragments: []string{"hex key"}},
		{name: "short key", content: hex.EncodeToString(make([]byte, 16)), mode: 0o600, fragments: []string{"32-byte"}},
		{name: "long key", content: hex.EncodeToString(make([]byte, 33)), mode: 0o600, fragments: []string{"32-byte"}},
		{name: "empty", content: "\n", mode: 0o600, fragments: []string{"hex key"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "kek"+string(rune('a'+i)))
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			s, err := seal.NewKeyFileSealer(path)
			if err == nil {
				t.Fatalf("got a sealer %v; want refused", s)
			}
			for _, f := range tc.fragments {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("got error %q; want it to contain %q", err, f)
				}
			}
			if strings.Contains(err.Error(), strings.TrimSpace(goodKey)) {
				t.Errorf("error %q shows the key", err)
			}
		})
	}

	// Modes 0600 and 0400 are fine, with or without the trailing newline.
	for _, mode := range []os.FileMode{0o600, 0o400} {
		path := filepath.Join(dir, "ok"+mode.String())
		if err := os.WriteFile(path, []byte(strings.TrimSpace(goodKey)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := seal.NewKeyFileSealer(path); err != nil {
			t.Errorf("mode %#o: %v", mode, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	// Fixed key and nonces, so that every fuzzing process makes the same
	// seed.
	key := bytes.Repeat([]byte{0x42}, seal.KeySize)
	s, err := seal.NewAESGCM(key, zeros{})
	if err != nil {
		f.Fatal(err)
	}
	good, err := s.Seal([]byte("JBSWY3DPEHPK3PXP"), "totp/alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "totp/alice")
	f.Add(good[:len(good)-1], "totp/alice")
	f.Add([]byte{0x01}, "")
	f.Add([]byte{}, "x")
	f.Add(append([]byte{0x02}, good[1:]...), "totp/alice")
	f.Fuzz(func(t *testing.T, sealed []byte, label string) {
		pt, err := s.Open(sealed, label)
		if err != nil {
			if !errors.Is(err, seal.ErrOpen) || pt != nil {
				t.Fatalf("Open failed with %v and plaintext %q; want ErrOpen and nil", err, pt)
			}
			return
		}
		// Only what was sealed under this key and label opens: the fuzzer
		// cannot forge a tag, so a success must be the seed itself.
		if !bytes.Equal(sealed, good) || label != "totp/alice" {
			t.Fatalf("Open(%x, %q) succeeded with %q", sealed, label, pt)
		}
		resealed, err := s.Seal(pt, label)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := s.Open(resealed, label); err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("re-seal round trip: got %q, %v", back, err)
		}
	})
}

// zeros reads zero bytes forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
