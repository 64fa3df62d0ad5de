package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testNow is the injected clock of most tests, on a whole second because
// certificates carry whole seconds.
var testNow = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newTestAuthority(t testing.TB) *Authority {
	t.Helper()
	a, err := Generate(Config{Cluster: "prod", Clock: fixedClock(testNow)})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return a
}

func newEd25519(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func newECDSA(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testRSAKey is generated once: RSA key generation is slow.
var testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newSSHKey(t testing.TB, pub crypto.PublicKey) ssh.PublicKey {
	t.Helper()
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("ssh.NewPublicKey: %v", err)
	}
	return k
}

// checkErr fails t unless err wraps want; a nil want means no error.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("got error %v; want none", err)
	case want != nil && err == nil:
		t.Fatalf("got no error; want %v", want)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("got error %q; want one wrapping %q", err, want)
	}
}

// zeroReader returns only zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
