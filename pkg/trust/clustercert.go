package trust

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// Why VerifyClusterChain refuses a chain; callers word them for their
// audience.
var (
	ErrNoCertificate = errors.New("no certificate")
	ErrExpired       = errors.New("certificate expired")
	ErrNotYetValid   = errors.New("certificate not valid yet")
	ErrNotIssued     = errors.New("certificate not issued by this cluster")
	ErrNoIdentity    = errors.New("certificate carries no tunnel identity")
	ErrOtherCluster  = errors.New("certificate is an identity of another cluster")
)

// VerifyClusterChain checks a client certificate chain (leaf first)
// presented to a cluster member: valid at now, chaining to roots (the
// cluster CA) for client authentication, and carrying exactly one tunnel
// identity URI of cluster. It is the one chain check of the gateway (which
// then checks the store: record, revocation, locks) and of an agent
// accepting a direct connection from another agent (which then checks the
// gateway's announcement of the stream). Errors wrap the Err values above.
func VerifyClusterChain(chain []*x509.Certificate, roots *x509.CertPool, cluster string, now time.Time) (identity.ID, error) {
	id, _, err := verifyClusterChain(chain, roots, cluster, now)
	return id, err
}

// verifyClusterChain is VerifyClusterChain; it also returns the window
// in which the chain it verified is valid.
func verifyClusterChain(chain []*x509.Certificate, roots *x509.CertPool, cluster string, now time.Time) (identity.ID, window, error) {
	if len(chain) == 0 {
		return identity.ID{}, window{}, ErrNoCertificate
	}
	leaf := chain[0]
	if now.After(leaf.NotAfter) {
		return identity.ID{}, window{}, fmt.Errorf("%w %s ago", ErrExpired, now.Sub(leaf.NotAfter).Round(time.Second))
	}
	if now.Before(leaf.NotBefore) {
		return identity.ID{}, window{}, ErrNotYetValid
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return identity.ID{}, window{}, fmt.Errorf("%w: %w", ErrNotIssued, err)
	}
	if len(leaf.URIs) != 1 {
		return identity.ID{}, window{}, ErrNoIdentity
	}
	id, err := identity.ParseURI(leaf.URIs[0])
	if err != nil {
		return identity.ID{}, window{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
	}
	if id.Cluster != cluster {
		return identity.ID{}, window{}, ErrOtherCluster
	}
	return id, chainWindow(chains[0]), nil
}

// chainWindow is when every certificate of chain (not empty) is valid.
func chainWindow(chain []*x509.Certificate) window {
	w := window{from: chain[0].NotBefore, until: chain[0].NotAfter}
	for _, c := range chain[1:] {
		if c.NotBefore.After(w.from) {
			w.from = c.NotBefore
		}
		if c.NotAfter.Before(w.until) {
			w.until = c.NotAfter
		}
	}
	return w
}

// window is when every certificate of a verified chain is valid.
type window struct{ from, until time.Time }

func (w window) holds(now time.Time) bool { return !now.Before(w.from) && !now.After(w.until) }
