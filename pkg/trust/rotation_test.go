package trust_test

import (
	"crypto/x509"
	"errors"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/trust"
)

// caPathLenZero is a cluster CA as certs makes it: no intermediates.
func caPathLenZero(name string) *x509.Certificate {
	c := caTemplate(name)
	c.MaxPathLen, c.MaxPathLenZero = 0, true
	return c
}

// TestVerifyPinnedRotation: during a CA rotation a peer pinning the old CA
// accepts a leaf of the new CA when the chain carries the new CA signed by
// the old one, and a peer pinning the new CA accepts it too; a CA in the
// chain that the pinned CA did not sign anchors nothing, and once the old
// CA is gone from the chain its pin no longer matches.
func TestVerifyPinnedRotation(t *testing.T) {
	oldKey, newK, leafKey := newKey(t), newKey(t), newKey(t)
	oldCA := sign(t, caPathLenZero("prod tunnel CA"), oldKey, nil, nil)
	newCA := sign(t, caPathLenZero("prod tunnel CA"), newK, nil, nil)
	cross := sign(t, caPathLenZero("prod tunnel CA"), newK, oldCA, oldKey.priv)
	rogue := sign(t, caPathLenZero("prod tunnel CA"), newK, nil, nil) // the new key self-signed: not vouched for by the old CA
	leaf := sign(t, leafTemplate("gw.example.com"), leafKey, newCA, newK.priv)

	oldPin, newPin := trust.Pin(oldCA), trust.Pin(newCA)
	for _, tt := range []struct {
		name     string
		chain    [][]byte
		pin      string
		ok       bool
		mismatch bool
	}{
		{"old pin, chain with the cross-signature", raw(leaf, newCA, cross, oldCA), oldPin, true, false},
		{"new pin, same chain", raw(leaf, newCA, cross, oldCA), newPin, true, false},
		{"old pin, no cross-signature", raw(leaf, newCA, oldCA), oldPin, false, false},
		{"old pin, a CA the old one did not sign", raw(leaf, rogue, oldCA), oldPin, false, false},
		{"old pin after finish", raw(leaf, newCA), oldPin, false, true},
		{"new pin after finish", raw(leaf, newCA), newPin, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := trust.VerifyPinned(tt.chain, tt.pin, "gw.example.com", now)
			if tt.ok != (err == nil) {
				t.Fatalf("VerifyPinned = %v; want ok=%v", err, tt.ok)
			}
			if tt.mismatch != errors.Is(err, trust.ErrPinMismatch) {
				t.Fatalf("VerifyPinned = %v; want ErrPinMismatch=%v", err, tt.mismatch)
			}
		})
	}
}
