package trust_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// TestChainCache: a remembered chain is accepted again only while every
// certificate of it is valid (the CA's expiry counts), with the same roots
// and cluster; refusals are not remembered; the cache stays within its
// size; a nil cache verifies.
func TestChainCache(t *testing.T) {
	caKey := newKey(t)
	caTmpl := caTemplate("prod CA")
	caTmpl.NotBefore, caTmpl.NotAfter = now.Add(-time.Hour), now.Add(30*time.Minute) // before the leaf's
	ca := sign(t, caTmpl, caKey, nil, nil)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	otherKey := newKey(t)
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(sign(t, caTemplate("other CA"), otherKey, nil, nil))
	id := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db-1"}
	u, err := url.Parse(id.String())
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() []*x509.Certificate {
		return []*x509.Certificate{sign(t, &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), URIs: []*url.URL{u},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, newKey(t), ca, caKey.priv)}
	}
	good := leaf()

	c := trust.NewChainCache(2)
	for i := range 2 {
		if got, err := c.Verify(good, roots, "prod", now); err != nil || got != id {
			t.Fatalf("verify %d: %v, %v; want %v", i, got, err, id)
		}
	}
	if c.Len() != 1 {
		t.Errorf("%d chains remembered; want 1", c.Len())
	}
	for _, tt := range []struct {
		name    string
		roots   *x509.CertPool
		cluster string
		at      time.Time
		want    error
	}{
		{"the CA expired (the leaf has not)", roots, "prod", now.Add(45 * time.Minute), trust.ErrNotIssued},
		{"the leaf expired", roots, "prod", now.Add(2 * time.Hour), trust.ErrExpired},
		{"before the chain's validity", roots, "prod", now.Add(-30 * time.Minute), trust.ErrNotYetValid},
		{"other roots", otherRoots, "prod", now, trust.ErrNotIssued},
		{"another cluster", roots, "staging", now, trust.ErrOtherCluster},
	} {
		if _, err := c.Verify(good, tt.roots, tt.cluster, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("remembered chain, %s: %v; want %v", tt.name, err, tt.want)
		}
	}
	if got, err := c.Verify(good, roots, "prod", now); err != nil || got != id {
		t.Errorf("after the refusals: %v, %v; want %v", got, err, id)
	}
	if c.Len() != 1 {
		t.Errorf("%d chains remembered after refusals; want 1", c.Len())
	}
	for range 3 {
		if _, err := c.Verify(leaf(), roots, "prod", now); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() > 2 {
		t.Errorf("%d chains remembered; want at most 2", c.Len())
	}
	// A full cache makes room for an eighth of its size at once, so that
	// it is not swept at every new chain.
	full := trust.NewChainCache(16)
	for i := range 16 {
		if _, err := full.Verify(leaf(), roots, "prod", now); err != nil {
			t.Fatal(err)
		}
		if full.Len() != i+1 {
			t.Fatalf("%d chains remembered after %d; want %d", full.Len(), i+1, i+1)
		}
	}
	for _, want := range []int{15, 16, 15} {
		if _, err := full.Verify(leaf(), roots, "prod", now); err != nil {
			t.Fatal(err)
		}
		if full.Len() != want {
			t.Errorf("a full cache of 16 holds %d chains after one more; want %d", full.Len(), want)
		}
	}
	var none *trust.ChainCache
	if got, err := none.Verify(good, roots, "prod", now); err != nil || got != id {
		t.Errorf("nil cache: %v, %v; want %v", got, err, id)
	}
	if _, err := none.Verify(good, roots, "prod", now.Add(2*time.Hour)); !errors.Is(err, trust.ErrExpired) {
		t.Errorf("nil cache, expired: %v", err)
	}
}

// TestChainCacheConcurrent: many goroutines verifying through one small
// cache at once (as an agent's reconnections and peer handshakes do) get
// the same verdict each as without it, and the cache keeps its bound.
func TestChainCacheConcurrent(t *testing.T) {
	caKey := newKey(t)
	ca := sign(t, caTemplate("prod CA"), caKey, nil, nil)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	otherKey := newKey(t)
	other := sign(t, caTemplate("other CA"), otherKey, nil, nil)
	var chains [][]*x509.Certificate
	var want []error
	for i := range 8 {
		id := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db-" + string(rune('a'+i))}
		u, err := url.Parse(id.String())
		if err != nil {
			t.Fatal(err)
		}
		issuer, issuerKey := ca, caKey
		if i%2 == 1 { // every other chain is of a foreign CA
			issuer, issuerKey = other, otherKey
		}
		chain := []*x509.Certificate{sign(t, &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), URIs: []*url.URL{u},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, newKey(t), issuer, issuerKey.priv)}
		_, err = trust.VerifyClusterChain(chain, roots, "prod", now)
		chains, want = append(chains, chain), append(want, err)
	}
	c := trust.NewChainCache(3)
	var wg sync.WaitGroup
	errs := make(chan string, 64*len(chains))
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range chains {
				k := (g + i) % len(chains)
				_, err := c.Verify(chains[k], roots, "prod", now)
				if (err == nil) != (want[k] == nil) || err != nil && err.Error() != want[k].Error() {
					errs <- fmt.Sprintf("chain %d: %v; want %v", k, err, want[k])
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if c.Len() > 3 {
		t.Errorf("%d chains remembered; want at most 3", c.Len())
	}
}
