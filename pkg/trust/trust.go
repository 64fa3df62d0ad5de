// Package trust decides which TLS peers to believe. It computes and checks
// the cluster CA pin (sha256:HEX of the CA's SubjectPublicKeyInfo, printed by
// tunnel-gateway init) and builds the TLS 1.3-only configurations every
// component uses.
//
// A client that knows only the gateway address and the pin uses
// [PinnedClientConfig]: the gateway must present a chain that verifies up to
// a certificate whose public key matches the pin. There is no trust on
// first use.
package trust

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// PinPrefix starts every pin.
const PinPrefix = "sha256:"

// Pin returns the pin of a CA certificate: sha256: and the hex SHA-256 of
// its SubjectPublicKeyInfo. A pin survives re-issuing the CA certificate
// with the same key.
func Pin(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return PinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin validates a pin given by a user and returns it in canonical form
// (lower-case hex).
func ParsePin(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, PinPrefix) {
		return "", fmt.Errorf("CA pin %q must start with %q (tunnel-gateway init prints it)", s, PinPrefix)
	}
	h := strings.ToLower(strings.TrimPrefix(s, PinPrefix))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA pin %q must be sha256: followed by 64 hex digits", s)
	}
	return PinPrefix + h, nil
}

// MatchPin reports, in constant time, whether cert's key has the given
// canonical pin.
func MatchPin(cert *x509.Certificate, pin string) bool {
	return subtle.ConstantTimeCompare([]byte(Pin(cert)), []byte(pin)) == 1
}

// ErrPinMismatch is wrapped when the gateway's chain does not lead to the
// pinned CA.
var ErrPinMismatch = errors.New("the gateway's certificate does not chain to the pinned cluster CA")

// VerifyPinned checks a server's presented chain (leaf first) against pin:
// some certificate of the chain must have the pinned key, and the leaf must
// verify for serverName at time now up to it, or up to a CA certificate of
// the chain that it signed (a CA rotation's cross-signature of the new CA,
// docs/CA-ROTATION.md). It returns the pinned CA.
func VerifyPinned(rawCerts [][]byte, pin, serverName string, now time.Time) (*x509.Certificate, error) {
	ca, _, err := verifyPinned(rawCerts, pin, serverName, now)
	return ca, err
}

// verifyPinned is VerifyPinned; it also returns the window in which the
// chain it verified is valid.
func verifyPinned(rawCerts [][]byte, pin, serverName string, now time.Time) (*x509.Certificate, window, error) {
	if len(rawCerts) == 0 {
		return nil, window{}, fmt.Errorf("%w: no certificate presented", ErrPinMismatch)
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, window{}, fmt.Errorf("parse gateway certificate: %w", err)
		}
		certs = append(certs, c)
	}
	var ca *x509.Certificate
	for _, c := range certs {
		if MatchPin(c, pin) {
			ca = c
			break
		}
	}
	if ca == nil {
		return nil, window{}, fmt.Errorf("%w: check the --ca-pin you were given, or that you reach the right gateway", ErrPinMismatch)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
		// During a CA rotation the gateway sends the new CA signed by the
		// pinned one (a cross-signature): the pinned CA vouches for it, so
		// it anchors the chain too (the pinned CA's path length of zero
		// would refuse it as an intermediate).
		if c != ca && c.BasicConstraintsValid && c.IsCA && c.CheckSignatureFrom(ca) == nil {
			roots.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		DNSName:       serverName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		return nil, window{}, fmt.Errorf("verify gateway certificate: %w", err)
	}
	// The pinned CA's own validity counts too, even when a cross-signed
	// CA anchored the chain.
	return ca, chainWindow(append(slices.Clone(chains[0]), ca)), nil
}

// PinnedClientConfig returns a TLS 1.3 client configuration that accepts a
// server only if its chain leads to the CA with the given pin. now is the
// clock (nil means time.Now). The caller may set GetClientCertificate for
// mutual TLS. It verifies the chain at every handshake; a process that
// connects again and again (an agent) uses [ChainCache.PinnedClientConfig].
func PinnedClientConfig(pin, serverName string, now func() time.Time) *tls.Config {
	return (*ChainCache)(nil).PinnedClientConfig(pin, serverName, now)
}

// ServerConfig returns a TLS 1.3-only server configuration that asks
// clients for a certificate but does not verify it during the handshake:
// anonymous endpoints (login, the CA bundle) accept connections without one,
// and every handler that needs an identity verifies the presented chain
// itself, so that an expired or foreign certificate gets an answer a person
// can act on instead of a bare TLS alert. TLS 1.3 still makes the client
// prove it holds the certificate's key (CertificateVerify).
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: getCert,
		ClientAuth:     tls.RequestClientCert,
	}
}
