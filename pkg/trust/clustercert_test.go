package trust_test

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// TestVerifyClusterChain: a client certificate of the cluster CA with one
// identity of the cluster passes, at the given time; each other case is
// refused with its own error.
func TestVerifyClusterChain(t *testing.T) {
	caKey := newKey(t)
	ca := sign(t, caTemplate("prod CA"), caKey, nil, nil)
	otherKey := newKey(t)
	other := sign(t, caTemplate("other CA"), otherKey, nil, nil)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	id := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db-1"}
	client := func(uris ...string) *x509.Certificate {
		tmpl := &x509.Certificate{
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		for _, u := range uris {
			p, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, p)
		}
		return sign(t, tmpl, newKey(t), ca, caKey.priv)
	}
	good := client(id.String())
	got, err := trust.VerifyClusterChain([]*x509.Certificate{good}, roots, "prod", now)
	if err != nil || got != id {
		t.Fatalf("a good chain: %v, %v; want %v", got, err, id)
	}
	serverOnly := leafTemplate()
	serverOnly.URIs = good.URIs
	foreign := client(id.String())
	foreign = sign(t, &x509.Certificate{NotBefore: foreign.NotBefore, NotAfter: foreign.NotAfter, URIs: foreign.URIs,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, newKey(t), other, otherKey.priv)
	for _, tt := range []struct {
		name  string
		chain []*x509.Certificate
		at    time.Time
		want  error
	}{
		{"no certificate", nil, now, trust.ErrNoCertificate},
		{"expired", []*x509.Certificate{good}, now.Add(2 * time.Hour), trust.ErrExpired},
		{"not yet valid", []*x509.Certificate{good}, now.Add(-time.Hour), trust.ErrNotYetValid},
		{"another CA", []*x509.Certificate{foreign}, now, trust.ErrNotIssued},
		{"server usage only", []*x509.Certificate{sign(t, serverOnly, newKey(t), ca, caKey.priv)}, now, trust.ErrNotIssued},
		{"no identity", []*x509.Certificate{client()}, now, trust.ErrNoIdentity},
		{"two identities", []*x509.Certificate{client(id.String(), "tunnel://prod/agent/db-2")}, now, trust.ErrNoIdentity},
		{"not an identity", []*x509.Certificate{client("https://example.com/")}, now, trust.ErrNoIdentity},
		{"another cluster", []*x509.Certificate{client("tunnel://staging/agent/db-1")}, now, trust.ErrOtherCluster},
	} {
		if _, err := trust.VerifyClusterChain(tt.chain, roots, "prod", tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v; want %v", tt.name, err, tt.want)
		}
	}
}
