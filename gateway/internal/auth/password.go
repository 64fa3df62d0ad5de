package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters.
type Params struct {
	// Memory is the memory cost in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the degree of parallelism.
	Threads uint8
	// SaltLen and KeyLen are the lengths in bytes of the random salt and of
	// the derived hash.
	SaltLen, KeyLen uint32
}

// DefaultParams is the OWASP minimum for argon2id (19 MiB, two passes, one
// thread). HashPassword refuses anything weaker; never lower it.
var DefaultParams = Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// minParams is the floor for new hashes, kept apart from DefaultParams so
// that raising the defaults does not make older configurations invalid.
var minParams = Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Bounds on what ParsePHC accepts. They are wider than minParams, so that a
// hash made with weaker (older) parameters still verifies and is then
// reported as needing a rehash, but they cap the cost one stored string can
// impose.
const (
	maxMemory  = 1 << 22 // KiB: 4 GiB
	maxTime    = 64
	maxThreads = 64
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
	maxPHCLen  = 256 // longer than any string within the bounds above
)

// MaxPasswordLen is the longest password, in bytes, that HashPassword
// accepts and that can ever verify. It keeps a request from making the
// server hash megabytes.
const MaxPasswordLen = 1024

// Errors callers branch on.
var (
	// ErrInvalidHash means a PHC string is malformed, is not argon2id
	// version 19, or has parameters out of bounds. Errors from ParsePHC
	// wrap it; they never quote the string itself.
	ErrInvalidHash = errors.New("invalid password hash")
	// ErrEmptyPassword is returned by HashPassword for an empty password.
	ErrEmptyPassword = errors.New("the password is empty")
	// ErrPasswordTooLong is returned by HashPassword for a password longer
	// than MaxPasswordLen.
	ErrPasswordTooLong = fmt.Errorf("the password is longer than %d bytes", MaxPasswordLen)
)

// kdf is the signature of argon2.IDKey, replaced in tests.
type kdf func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte

// validForHashing reports why p may not be used for a new hash, or nil.
func (p Params) validForHashing() error {
	switch {
	case p.Memory < minParams.Memory || p.Memory > maxMemory:
		return fmt.Errorf("argon2id memory cost %d KiB out of range [%d, %d]", p.Memory, minParams.Memory, maxMemory)
	case p.Time < minParams.Time || p.Time > maxTime:
		return fmt.Errorf("argon2id time cost %d out of range [%d, %d]", p.Time, minParams.Time, maxTime)
	case p.Threads < minParams.Threads || p.Threads > maxThreads:
		return fmt.Errorf("argon2id parallelism %d out of range [%d, %d]", p.Threads, minParams.Threads, maxThreads)
	case p.SaltLen < minParams.SaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("salt length %d out of range [%d, %d]", p.SaltLen, minParams.SaltLen, maxSaltLen)
	case p.KeyLen < minParams.KeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("key length %d out of range [%d, %d]", p.KeyLen, minParams.KeyLen, maxKeyLen)
	}
	return nil
}

// weakerThan reports whether any parameter of p is below that of target.
func (p Params) weakerThan(target Params) bool {
	return p.Memory < target.Memory ||
		p.Time < target.Time ||
		p.Threads < target.Threads ||
		p.SaltLen < target.SaltLen ||
		p.KeyLen < target.KeyLen
}

func checkPassword(password []byte) error {
	switch {
	case len(password) == 0:
		return ErrEmptyPassword
	case len(password) > MaxPasswordLen:
		return ErrPasswordTooLong
	}
	return nil
}

// HashPassword hashes password with argon2id and parameters p, using a salt
// read from rand (nil means crypto/rand.Reader), and returns the PHC string
// to store. It refuses parameters weaker than DefaultParams, an empty
// password and one longer than MaxPasswordLen.
//
// HashPassword takes tens of milliseconds and p.Memory KiB of memory; a
// server should go through a Hasher, which bounds how many run at once.
func HashPassword(password []byte, p Params, rand io.Reader) (string, error) {
	return hashPassword(password, p, rand, argon2.IDKey)
}

func hashPassword(password []byte, p Params, r io.Reader, f kdf) (string, error) {
	if err := p.validForHashing(); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	if err := checkPassword(password); err != nil {
		return "", err
	}
	if r == nil {
		r = rand.Reader
	}
	salt := make([]byte, p.SaltLen)
	if _, err := io.ReadFull(r, salt); err != nil {
		return "", fmt.Errorf("hash password: read salt: %w", err)
	}
	key := f(password, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return formatPHC(p, salt, key), nil
}

// b64 is the PHC encoding: standard alphabet, no padding.
var b64 = base64.RawStdEncoding.Strict()

func formatPHC(p Params, salt, hash []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(hash))
}

// ParsePHC parses an argon2id PHC string as HashPassword writes it:
//
//	$argon2id$v=19$m=<KiB>,t=<passes>,p=<threads>$<salt>$<hash>
//
// with salt and hash in standard base64 without padding. It is strict,
// since the string may come from anywhere: any other algorithm or version,
// any extra field, a number with a sign or a leading zero, non-canonical
// base64, or a parameter outside fixed bounds (memory up to 4 GiB, time and
// threads up to 64, a salt of 8 to 64 bytes, a hash of 16 to 64 bytes) is
// refused with an error wrapping ErrInvalidHash. It never panics. The
// returned Params carry the salt and hash lengths.
func ParsePHC(s string) (p Params, salt, hash []byte, err error) {
	fail := func(format string, args ...any) (Params, []byte, []byte, error) {
		return Params{}, nil, nil, fmt.Errorf("%w: "+format, append([]any{ErrInvalidHash}, args...)...)
	}
	if len(s) > maxPHCLen {
		return fail("longer than %d bytes", maxPHCLen)
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return fail("want 5 fields separated by '$'")
	}
	if f[1] != "argon2id" {
		return fail("algorithm is not argon2id")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return fail("version is not %d", argon2.Version)
	}

	kv := strings.Split(f[3], ",")
	if len(kv) != 3 {
		return fail("want parameters m, t and p")
	}
	var nums [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return fail("want parameters m, t and p")
		}
		n, err := parseDecimal(v)
		if err != nil {
			return fail("parameter %s: %v", name, err)
		}
		nums[i] = n
	}
	m, t, par := nums[0], nums[1], nums[2]
	switch {
	case t < 1 || t > maxTime:
		return fail("time cost %d out of range [1, %d]", t, maxTime)
	case par < 1 || par > maxThreads:
		return fail("parallelism %d out of range [1, %d]", par, maxThreads)
	case m < 8*par || m > maxMemory:
		// argon2 needs 8 KiB per lane; below that it would silently use more.
		return fail("memory cost %d KiB out of range [%d, %d]", m, 8*par, maxMemory)
	}

	if salt, err = decodeB64(f[4]); err != nil {
		return fail("salt: %v", err)
	}
	if len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return fail("salt length %d out of range [%d, %d]", len(salt), minSaltLen, maxSaltLen)
	}
	if hash, err = decodeB64(f[5]); err != nil {
		return fail("hash: %v", err)
	}
	if len(hash) < minKeyLen || len(hash) > maxKeyLen {
		return fail("hash length %d out of range [%d, %d]", len(hash), minKeyLen, maxKeyLen)
	}
	p = Params{
		Memory:  uint32(m),
		Time:    uint32(t),
		Threads: uint8(par),
		SaltLen: uint32(len(salt)),
		KeyLen:  uint32(len(hash)),
	}
	return p, salt, hash, nil
}

// parseDecimal parses a PHC decimal: ASCII digits, no sign, no leading
// zero, at most 10 digits.
func parseDecimal(s string) (uint64, error) {
	if s == "" || len(s) > 10 {
		return 0, errors.New("want 1 to 10 digits")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, errors.New("leading zero")
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a decimal number")
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// decodeB64 decodes standard base64 without padding, refusing the line
// breaks the standard decoder would skip.
func decodeB64(s string) ([]byte, error) {
	for i := range len(s) {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return nil, errors.New("not base64 without padding")
		}
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, errors.New("not canonical base64 without padding")
	}
	return b, nil
}

// VerifyPassword reports whether password matches the PHC string phc,
// comparing the hashes in constant time. needsRehash is true when the
// password matched but phc was made with parameters weaker than
// DefaultParams: the caller should then store a new hash. An error means
// phc itself is invalid (see ParsePHC).
//
// Like HashPassword, it is expensive; a server should use Hasher.Verify.
func VerifyPassword(phc string, password []byte) (ok, needsRehash bool, err error) {
	p, salt, want, err := ParsePHC(phc)
	if err != nil {
		return false, false, err
	}
	if checkPassword(password) != nil {
		return false, false, nil
	}
	ok, needsRehash = compare(p, salt, want, password, DefaultParams, argon2.IDKey)
	return ok, needsRehash, nil
}

func compare(p Params, salt, want, password []byte, target Params, f kdf) (ok, needsRehash bool) {
	got := f(password, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return false, false
	}
	return true, p.weakerThan(target)
}

// A Hasher hashes and verifies passwords with fixed parameters, running at
// most a fixed number of argon2 computations at once: each takes
// Params.Memory KiB, so unbounded concurrency would let a flood of login
// attempts exhaust the server's memory. Callers over the bound wait for a
// slot or for their context to end.
//
// A Hasher is safe for concurrent use.
type Hasher struct {
	// Rand is the source of salts; nil means crypto/rand.Reader. Set it
	// before the first call to Hash.
	Rand io.Reader
	// OnCompute, if set, is called once for every argon2 computation that
	// Hash, Verify or VerifyDummy sets out to run, before it waits for a
	// slot (so also when the context ends before one is free). Calls that
	// cost nothing (an invalid hash, an empty or overlong password) do not
	// call it. It lets tests and metrics count how many passwords were
	// evaluated. It must be safe for concurrent use; set it before the
	// Hasher is first used.
	OnCompute func()

	params Params
	sem    chan struct{} // one token per running computation
	dummy  string        // a PHC string with params, for VerifyDummy
	kdf    kdf           // argon2.IDKey; tests replace it
}

// NewHasher returns a Hasher using p (the zero Params means DefaultParams)
// that runs at most maxConcurrent computations at once (zero or less means
// twice GOMAXPROCS). It refuses parameters weaker than DefaultParams.
func NewHasher(p Params, maxConcurrent int) (*Hasher, error) {
	if p == (Params{}) {
		p = DefaultParams
	}
	if err := p.validForHashing(); err != nil {
		return nil, fmt.Errorf("new hasher: %w", err)
	}
	if maxConcurrent <= 0 {
		maxConcurrent = 2 * runtime.GOMAXPROCS(0)
	}
	// The dummy's salt and hash are arbitrary: no password is meant to
	// match it, it only has to cost what a real hash with p costs.
	salt := make([]byte, p.SaltLen)
	for i := range salt {
		salt[i] = byte(0x5a ^ i)
	}
	return &Hasher{
		params: p,
		sem:    make(chan struct{}, maxConcurrent),
		dummy:  formatPHC(p, salt, make([]byte, p.KeyLen)),
		kdf:    argon2.IDKey,
	}, nil
}

// Params returns the parameters h hashes with.
func (h *Hasher) Params() Params { return h.params }

// acquire waits for a computation slot. A context already done never gets
// one, even if a slot is free.
func (h *Hasher) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wait for password hashing slot: %w", context.Cause(ctx))
	}
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for password hashing slot: %w", context.Cause(ctx))
	}
}

func (h *Hasher) release() { <-h.sem }

// computing reports one computation about to run to OnCompute.
func (h *Hasher) computing() {
	if h.OnCompute != nil {
		h.OnCompute()
	}
}

// Hash is HashPassword with h's parameters and concurrency bound. It
// returns an error wrapping the context's cause if ctx ends before a slot
// is free.
func (h *Hasher) Hash(ctx context.Context, password []byte) (string, error) {
	if err := checkPassword(password); err != nil {
		return "", err
	}
	h.computing()
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return hashPassword(password, h.params, h.Rand, h.kdf)
}

// Verify is VerifyPassword with h's concurrency bound; needsRehash is
// reported against h's parameters rather than DefaultParams. An invalid
// phc is an error; so is the end of ctx before a slot is free. An empty or
// overlong password is simply not ok, and costs no computation.
func (h *Hasher) Verify(ctx context.Context, phc string, password []byte) (ok, needsRehash bool, err error) {
	p, salt, want, err := ParsePHC(phc)
	if err != nil {
		return false, false, err
	}
	if checkPassword(password) != nil {
		return false, false, nil
	}
	h.computing()
	if err := h.acquire(ctx); err != nil {
		return false, false, err
	}
	defer h.release()
	ok, needsRehash = compare(p, salt, want, password, h.params, h.kdf)
	return ok, needsRehash, nil
}

// VerifyDummy does the work of Verify against a fixed hash made with h's
// parameters, and discards the result. Call it when the user is unknown,
// so that the answer takes as long as for a known user (whose hash uses
// the same parameters) and does not reveal which users exist. Its error is
// only ever the end of ctx.
func (h *Hasher) VerifyDummy(ctx context.Context, password []byte) error {
	_, _, err := h.Verify(ctx, h.dummy, password)
	return err
}
