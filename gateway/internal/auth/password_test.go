package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/argon2"
)

// weakPHC returns a real argon2id hash of password with parameters
// HashPassword would refuse, as an older version might have stored.
func weakPHC(t *testing.T, password string, p Params) string {
	t.Helper()
	salt := bytes.Repeat([]byte{7}, int(p.SaltLen))
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return formatPHC(p, salt, key)
}

func TestHashPasswordRoundTrip(t *testing.T) {
	const password = "correct horse battery staple"
	phc, err := HashPassword([]byte(password), DefaultParams, nil)
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(phc, want) {
		t.Errorf("HashPassword = %q; want prefix %q", phc, want)
	}
	p, salt, hash, err := ParsePHC(phc)
	if err != nil {
		t.Fatalf("ParsePHC(%q): %v", phc, err)
	}
	if diff := cmp.Diff(DefaultParams, p); diff != "" {
		t.Errorf("params read back (-want +got):\n%s", diff)
	}
	if len(salt) != 16 || len(hash) != 32 {
		t.Errorf("got salt of %d bytes, hash of %d; want 16 and 32", len(salt), len(hash))
	}

	tests := []struct {
		password string
		want     bool
	}{
		{password, true},
		{"correct horse battery stapl", false},
		{password + " ", false},
		{"Correct horse battery staple", false},
		{"", false},
		{strings.Repeat("x", MaxPasswordLen+1), false},
	}
	for _, tc := range tests {
		ok, rehash, err := VerifyPassword(phc, []byte(tc.password))
		if err != nil {
			t.Errorf("VerifyPassword(%.20q): %v", tc.password, err)
			continue
		}
		if ok != tc.want || rehash {
			t.Errorf("VerifyPassword(%.20q) = %v, %v; want %v, false", tc.password, ok, rehash, tc.want)
		}
	}
}

func TestHashPasswordUsesRand(t *testing.T) {
	salt := []byte("0123456789abcdef")
	phc, err := HashPassword([]byte("pw"), DefaultParams, bytes.NewReader(salt))
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	_, got, _, err := ParsePHC(phc)
	if err != nil {
		t.Fatalf("ParsePHC: %v", err)
	}
	if !bytes.Equal(got, salt) {
		t.Errorf("got salt %q; want %q", got, salt)
	}
	want := "$argon2id$v=19$m=19456,t=2,p=1$" + base64.RawStdEncoding.EncodeToString(salt) + "$"
	if !strings.HasPrefix(phc, want) {
		t.Errorf("got %q; want prefix %q", phc, want)
	}

	if _, err := HashPassword([]byte("pw"), DefaultParams, bytes.NewReader(salt[:3])); err == nil {
		t.Errorf("HashPassword with a short random source succeeded; want error")
	}
}

func TestHashPasswordRefuses(t *testing.T) {
	with := func(f func(*Params)) Params {
		p := DefaultParams
		f(&p)
		return p
	}
	tests := []struct {
		name     string
		p        Params
		password string
		wantErr  error
	}{
		{"zero params", Params{}, "pw", nil},
		{"low memory", with(func(p *Params) { p.Memory = 19455 }), "pw", nil},
		{"huge memory", with(func(p *Params) { p.Memory = maxMemory + 1 }), "pw", nil},
		{"one pass", with(func(p *Params) { p.Time = 1 }), "pw", nil},
		{"many passes", with(func(p *Params) { p.Time = 65 }), "pw", nil},
		{"no threads", with(func(p *Params) { p.Threads = 0 }), "pw", nil},
		{"many threads", with(func(p *Params) { p.Threads = 65 }), "pw", nil},
		{"short salt", with(func(p *Params) { p.SaltLen = 8 }), "pw", nil},
		{"long salt", with(func(p *Params) { p.SaltLen = 65 }), "pw", nil},
		{"short key", with(func(p *Params) { p.KeyLen = 16 }), "pw", nil},
		{"long key", with(func(p *Params) { p.KeyLen = 65 }), "pw", nil},
		{"empty password", DefaultParams, "", ErrEmptyPassword},
		{"long password", DefaultParams, strings.Repeat("x", MaxPasswordLen+1), ErrPasswordTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			fake := func(_, _ []byte, _, _ uint32, _ uint8, keyLen uint32) []byte {
				called = true
				return make([]byte, keyLen)
			}
			phc, err := hashPassword([]byte(tc.password), tc.p, nil, fake)
			if err == nil {
				t.Fatalf("hashPassword = %q; want error", phc)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("got error %v; want %v", err, tc.wantErr)
			}
			if called {
				t.Errorf("argon2 ran; want refusal before hashing")
			}
		})
	}
}

func TestVerifyPasswordNeedsRehash(t *testing.T) {
	with := func(f func(*Params)) Params {
		p := DefaultParams
		f(&p)
		return p
	}
	tests := []struct {
		name string
		p    Params
		want bool
	}{
		{"defaults", DefaultParams, false},
		{"stronger", with(func(p *Params) { p.Memory, p.Threads, p.KeyLen = 2*19456, 2, 64 }), false},
		{"low memory", with(func(p *Params) { p.Memory = 8192 }), true},
		{"one pass", with(func(p *Params) { p.Memory, p.Time = 8192, 1 }), true},
		{"short salt", with(func(p *Params) { p.Memory, p.SaltLen = 8192, 8 }), true},
		{"short key", with(func(p *Params) { p.Memory, p.KeyLen = 8192, 16 }), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			phc := weakPHC(t, "pw", tc.p)
			ok, rehash, err := VerifyPassword(phc, []byte("pw"))
			if err != nil || !ok || rehash != tc.want {
				t.Errorf("VerifyPassword(%q, right) = %v, %v, %v; want true, %v, nil", phc, ok, rehash, err, tc.want)
			}
			// A wrong password never asks for a rehash.
			ok, rehash, err = VerifyPassword(phc, []byte("wrong"))
			if err != nil || ok || rehash {
				t.Errorf("VerifyPassword(%q, wrong) = %v, %v, %v; want false, false, nil", phc, ok, rehash, err)
			}
		})
	}
}

const validPHC = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY"

func TestParsePHCValid(t *testing.T) {
	tests := []struct {
		in   string
		want Params
	}{
		{validPHC, Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}},
		{"$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", Params{Memory: 8, Time: 1, Threads: 1, SaltLen: 8, KeyLen: 16}},
		{
			"$argon2id$v=19$m=4194304,t=64,p=64$" + strings.Repeat("A", 86) + "$" + strings.Repeat("A", 86),
			Params{Memory: 1 << 22, Time: 64, Threads: 64, SaltLen: 64, KeyLen: 64},
		},
	}
	for _, tc := range tests {
		p, salt, hash, err := ParsePHC(tc.in)
		if err != nil {
			t.Errorf("ParsePHC(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, p); diff != "" {
			t.Errorf("ParsePHC(%q) params (-want +got):\n%s", tc.in, diff)
		}
		if got := formatPHC(p, salt, hash); got != tc.in {
			t.Errorf("formatPHC(ParsePHC(%q)) = %q; want the input", tc.in, got)
		}
	}
}

func TestParsePHCRefuses(t *testing.T) {
	const (
		salt = "c29tZXNhbHRzb21lc2FsdA"                      // 16 bytes
		hash = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY" // 32 bytes
	)
	phc := func(alg, ver, params, s, h string) string {
		return "$" + alg + "$" + ver + "$" + params + "$" + s + "$" + h
	}
	std := func(params string) string { return phc("argon2id", "v=19", params, salt, hash) }
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"dollar", "$"},
		{"no leading dollar", strings.TrimPrefix(validPHC, "$")},
		{"trailing dollar", validPHC + "$"},
		{"extra field", validPHC + "$AAAA"},
		{"leading space", " " + validPHC},
		{"trailing newline", validPHC + "\n"},
		{"argon2i", phc("argon2i", "v=19", "m=19456,t=2,p=1", salt, hash)},
		{"argon2d", phc("argon2d", "v=19", "m=19456,t=2,p=1", salt, hash)},
		{"upper case", phc("ARGON2ID", "v=19", "m=19456,t=2,p=1", salt, hash)},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"},
		{"scrypt", "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E"},
		{"version 16", phc("argon2id", "v=16", "m=19456,t=2,p=1", salt, hash)},
		{"no version", "$argon2id$m=19456,t=2,p=1$" + salt + "$" + hash},
		{"version leading zero", phc("argon2id", "v=019", "m=19456,t=2,p=1", salt, hash)},
		{"params out of order", std("t=2,m=19456,p=1")},
		{"missing param", std("m=19456,t=2")},
		{"extra param", std("m=19456,t=2,p=1,keyid=abc")},
		{"data param", std("m=19456,t=2,p=1,data=abc")},
		{"empty value", std("m=,t=2,p=1")},
		{"space", std("m=19456, t=2,p=1")},
		{"plus sign", std("m=+19456,t=2,p=1")},
		{"minus sign", std("m=19456,t=-2,p=1")},
		{"leading zero", std("m=019456,t=2,p=1")},
		{"zero padded", std("m=19456,t=02,p=1")},
		{"hex", std("m=0x4c00,t=2,p=1")},
		{"non-ASCII digits", std("m=١٩٤٥٦,t=2,p=1")},
		{"overflow", std("m=99999999999999999999,t=2,p=1")},
		{"uint32 wrap", std("m=4294986752,t=2,p=1")},
		{"zero memory", std("m=0,t=2,p=1")},
		{"memory over cap", std("m=4194305,t=2,p=1")},
		{"memory below 8 per lane", std("m=511,t=2,p=64")},
		{"zero time", std("m=19456,t=0,p=1")},
		{"time over cap", std("m=19456,t=65,p=1")},
		{"zero threads", std("m=19456,t=2,p=0")},
		{"threads over cap", std("m=19456,t=2,p=65")},
		{"threads wrap uint8", std("m=19456,t=2,p=257")},
		{"padded salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt+"==", hash)},
		{"padded hash", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY3OA==")},
		{"url alphabet", phc("argon2id", "v=19", "m=19456,t=2,p=1", "c29tZXNhbHRzb21lc2_-dA", hash)},
		{"newline in salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt[:8]+"\n"+salt[8:], hash)},
		{"non-canonical trailing bits", phc("argon2id", "v=19", "m=19456,t=2,p=1", "c29tZXNhbHRzb21lc2FsdB", hash)},
		{"impossible length", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt+"AAA", hash)}, // 25 characters
		{"empty salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", "", hash)},
		{"short salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", "AAAAAAAAAA", hash)}, // 7 bytes
		{"long salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", strings.Repeat("A", 88), hash)},
		{"empty hash", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, "")},
		{"short hash", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, "AAAAAAAAAAAAAAAAAAAA")}, // 15 bytes
		{"long hash", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, strings.Repeat("A", 88))},
		{"NUL", validPHC[:20] + "\x00" + validPHC[21:]},
		{"invalid UTF-8", validPHC[:40] + "\xff" + validPHC[41:]},
		{"too long", validPHC + strings.Repeat("A", 300)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, salt, hash, err := ParsePHC(tc.in)
			if err == nil {
				t.Fatalf("ParsePHC(%q) = %+v, %x, %x; want error", tc.in, p, salt, hash)
			}
			if !errors.Is(err, ErrInvalidHash) {
				t.Errorf("got error %v; want it to wrap ErrInvalidHash", err)
			}
			if len(tc.in) > 20 && strings.Contains(err.Error(), tc.in) {
				t.Errorf("error %q quotes the hash", err)
			}
			if _, _, verr := VerifyPassword(tc.in, []byte("pw")); !errors.Is(verr, ErrInvalidHash) {
				t.Errorf("VerifyPassword: got error %v; want ErrInvalidHash", verr)
			}
		})
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add(validPHC)
	f.Add("$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=4194304,t=64,p=64$" + strings.Repeat("A", 86) + "$" + strings.Repeat("A", 86))
	f.Add("$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA")
	f.Add("$argon2id$v=19$m=019456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA==$YWJj")
	f.Add("$argon2id$v=19$m=99999999999,t=2,p=1,keyid=x$$")
	f.Add("$$$$$")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, hash, err := ParsePHC(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidHash) {
				t.Fatalf("ParsePHC(%q): error %v does not wrap ErrInvalidHash", s, err)
			}
			return
		}
		// Whatever is accepted is canonical: formatting it back gives the
		// input, byte for byte.
		if got := formatPHC(p, salt, hash); got != s {
			t.Fatalf("formatPHC(ParsePHC(%q)) = %q; want the input", s, got)
		}
		if p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory ||
			p.Time < 1 || p.Time > maxTime ||
			p.Threads < 1 || p.Threads > maxThreads ||
			int(p.SaltLen) != len(salt) || len(salt) < minSaltLen || len(salt) > maxSaltLen ||
			int(p.KeyLen) != len(hash) || len(hash) < minKeyLen || len(hash) > maxKeyLen {
			t.Fatalf("ParsePHC(%q) = %+v, %d-byte salt, %d-byte hash: out of bounds", s, p, len(salt), len(hash))
		}
	})
}

func TestNewHasher(t *testing.T) {
	h, err := NewHasher(Params{}, 0)
	if err != nil {
		t.Fatalf("NewHasher(zero): %v", err)
	}
	if diff := cmp.Diff(DefaultParams, h.Params()); diff != "" {
		t.Errorf("zero Params (-want +got):\n%s", diff)
	}
	if got := cap(h.sem); got < 2 {
		t.Errorf("default concurrency = %d; want 2*GOMAXPROCS", got)
	}
	weak := DefaultParams
	weak.Memory = 4096
	if _, err := NewHasher(weak, 1); err == nil {
		t.Errorf("NewHasher(%+v) succeeded; want error", weak)
	}
}

func TestHasherRoundTrip(t *testing.T) {
	ctx := t.Context()
	h, err := NewHasher(DefaultParams, 2)
	if err != nil {
		t.Fatal(err)
	}
	phc, err := h.Hash(ctx, []byte("s3cret"))
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if ok, rehash, err := h.Verify(ctx, phc, []byte("s3cret")); !ok || rehash || err != nil {
		t.Errorf("Verify(right) = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	if ok, rehash, err := h.Verify(ctx, phc, []byte("s3cre")); ok || rehash || err != nil {
		t.Errorf("Verify(wrong) = %v, %v, %v; want false, false, nil", ok, rehash, err)
	}
	if err := h.VerifyDummy(ctx, []byte("s3cret")); err != nil {
		t.Errorf("VerifyDummy: %v", err)
	}
	if _, err := h.Hash(ctx, nil); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("Hash(empty): got error %v; want ErrEmptyPassword", err)
	}

	// A hasher with stronger parameters asks to rehash the defaults.
	strong := DefaultParams
	strong.Time = 3
	hs, err := NewHasher(strong, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ok, rehash, err := hs.Verify(ctx, phc, []byte("s3cret")); !ok || !rehash || err != nil {
		t.Errorf("stronger Verify(right) = %v, %v, %v; want true, true, nil", ok, rehash, err)
	}
}

// fakeKDF replaces argon2 in h, counting calls and recording the last
// parameters it was given.
type fakeKDF struct {
	mu    sync.Mutex
	calls int
	last  Params
}

func (f *fakeKDF) install(h *Hasher) {
	h.kdf = func(_, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls++
		f.last = Params{Memory: memory, Time: time, Threads: threads, SaltLen: uint32(len(salt)), KeyLen: keyLen}
		return bytes.Repeat([]byte{1}, int(keyLen))
	}
}

func TestVerifyDummyCostsOneHash(t *testing.T) {
	p := DefaultParams
	p.Memory, p.Time, p.Threads, p.SaltLen, p.KeyLen = 65536, 3, 4, 32, 64
	h, err := NewHasher(p, 1)
	if err != nil {
		t.Fatal(err)
	}
	var f fakeKDF
	f.install(h)
	if err := h.VerifyDummy(t.Context(), []byte("anything")); err != nil {
		t.Fatalf("VerifyDummy: %v", err)
	}
	if f.calls != 1 {
		t.Errorf("argon2 ran %d times; want 1", f.calls)
	}
	if diff := cmp.Diff(p, f.last); diff != "" {
		t.Errorf("VerifyDummy hashed with other parameters than the hasher's (-want +got):\n%s", diff)
	}
}

func TestHasherCancelledContext(t *testing.T) {
	h, err := NewHasher(DefaultParams, 1)
	if err != nil {
		t.Fatal(err)
	}
	var f fakeKDF
	f.install(h)
	phc := weakPHC(t, "pw", Params{Memory: 8, Time: 1, Threads: 1, SaltLen: 8, KeyLen: 16})

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.Hash(ctx, []byte("pw")); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash: got error %v; want context.Canceled", err)
	}
	if _, _, err := h.Verify(ctx, phc, []byte("pw")); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify: got error %v; want context.Canceled", err)
	}
	if err := h.VerifyDummy(ctx, []byte("pw")); !errors.Is(err, context.Canceled) {
		t.Errorf("VerifyDummy: got error %v; want context.Canceled", err)
	}
	if f.calls != 0 {
		t.Errorf("argon2 ran %d times with a cancelled context; want 0", f.calls)
	}
}

func TestHasherWaitsForSlot(t *testing.T) {
	h, err := NewHasher(DefaultParams, 1)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	h.kdf = func(_, _ []byte, _, _ uint32, _ uint8, keyLen uint32) []byte {
		entered <- struct{}{}
		<-release
		return make([]byte, keyLen)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := h.Hash(context.Background(), []byte("first")); err != nil {
			t.Errorf("first Hash: %v", err)
		}
	})
	<-entered // the only slot is taken

	cause := errors.New("client went away")
	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan error)
	go func() {
		_, err := h.Hash(ctx, []byte("second"))
		done <- err
	}()
	cancel(cause)
	if err := <-done; !errors.Is(err, cause) {
		t.Errorf("second Hash: got error %v; want %v", err, cause)
	}

	close(release)
	wg.Wait()
}

func TestHasherConcurrencyBound(t *testing.T) {
	const (
		bound   = 2
		callers = 6
	)
	h, err := NewHasher(DefaultParams, bound)
	if err != nil {
		t.Fatal(err)
	}
	var inflight, peak atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	h.kdf = func(_, _ []byte, _, _ uint32, _ uint8, keyLen uint32) []byte {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		entered <- struct{}{}
		<-release
		inflight.Add(-1)
		return make([]byte, keyLen)
	}
	phc := weakPHC(t, "pw", Params{Memory: 8, Time: 1, Threads: 1, SaltLen: 8, KeyLen: 16})

	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = h.Hash(t.Context(), []byte("pw"))
			} else {
				_, _, err = h.Verify(t.Context(), phc, []byte("pw"))
			}
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
		})
	}
	for range bound {
		<-entered
	}
	for range callers - bound {
		release <- struct{}{} // one leaves, so one more may enter
		<-entered
	}
	for range bound {
		release <- struct{}{}
	}
	wg.Wait()
	if got := peak.Load(); got != bound {
		t.Errorf("got %d computations at once; want %d", got, bound)
	}
}

func TestHasherOnCompute(t *testing.T) {
	h, err := NewHasher(DefaultParams, 1)
	if err != nil {
		t.Fatal(err)
	}
	var f fakeKDF
	f.install(h)
	var hooked atomic.Int64
	h.OnCompute = func() { hooked.Add(1) }
	ctx := t.Context()

	phc, err := h.Hash(ctx, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Verify(ctx, phc, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	if err := h.VerifyDummy(ctx, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	// Free refusals compute nothing and are not reported.
	h.Hash(ctx, nil)
	h.Verify(ctx, phc, nil)
	h.Verify(ctx, phc, bytes.Repeat([]byte{'x'}, MaxPasswordLen+1))
	h.Verify(ctx, "$argon2id$junk", []byte("pw"))
	h.VerifyDummy(ctx, nil)

	if f.calls != 3 || hooked.Load() != 3 {
		t.Errorf("argon2 ran %d times and OnCompute was called %d times; want 3 and 3", f.calls, hooked.Load())
	}
}
