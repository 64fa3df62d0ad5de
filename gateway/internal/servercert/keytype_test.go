package servercert

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
)

// handshake runs a TLS 1.3 handshake between src, serving, and a client
// that trusts roots, over a pipe, and returns what the client saw.
func handshake(t *testing.T, src Source, roots *x509.CertPool, name string) (tls.ConnectionState, error) {
	t.Helper()
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// No session tickets: nothing is written after the handshake, which
	// the synchronous pipe would block on.
	srv := tls.Server(sc, &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: src.GetCertificate, SessionTicketsDisabled: true})
	done := make(chan error, 1)
	go func() {
		err := srv.HandshakeContext(ctx)
		if err != nil {
			sc.Close() // unblock the client
		}
		done <- err
	}()
	cli := tls.Client(cc, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: name})
	err := cli.HandshakeContext(ctx)
	if err != nil {
		cc.Close()
	}
	<-done
	return cli.ConnectionState(), err
}

// TestFromCAKeyTypes: the gateway's own certificate has an ECDSA P-256
// key; with a new cluster's CA every signature a peer checks is ECDSA
// with SHA-256, the combination browsers accept. A cluster whose X.509
// CA is still Ed25519 serves the same kind of key under an Ed25519
// signature, which Go peers (agents, clients) accept as before.
func TestFromCAKeyTypes(t *testing.T) {
	_, k1, _ := ed25519.GenerateKey(rand.Reader)
	_, k2, _ := ed25519.GenerateKey(rand.Reader)
	_, k3, _ := ed25519.GenerateKey(rand.Reader)
	oldCA, err := certs.GenerateWith(certs.Config{Cluster: "prod"}, certs.Signers{X509: k1, SSHUser: k2, SSHHost: k3})
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := certs.Generate(certs.Config{Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		ca      *certs.Authority
		wantSig x509.SignatureAlgorithm
	}{
		{"ECDSA P-256 CA", newCA, x509.ECDSAWithSHA256},
		{"Ed25519 CA", oldCA, x509.PureEd25519},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := FromCA(tc.ca, "gateway", []string{"localhost", "127.0.0.1"}, time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := src.GetCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := c.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
				t.Fatalf("the gateway's key is %T; want ECDSA P-256", c.PrivateKey)
			}
			if pub, ok := c.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(c.PrivateKey.(*ecdsa.PrivateKey).Public()) {
				t.Fatalf("the certificate's key %T is not the served key", c.Leaf.PublicKey)
			}
			if c.Leaf.SignatureAlgorithm != tc.wantSig {
				t.Errorf("the certificate is signed with %v; want %v", c.Leaf.SignatureAlgorithm, tc.wantSig)
			}
			for _, name := range []string{"localhost", "127.0.0.1"} {
				st, err := handshake(t, src, tc.ca.X509Pool(), name)
				if err != nil {
					t.Fatalf("TLS handshake for %s with a client trusting the cluster CA: %v", name, err)
				}
				if len(st.VerifiedChains) == 0 || !st.VerifiedChains[0][len(st.VerifiedChains[0])-1].Equal(tc.ca.X509CA()) {
					t.Errorf("the client's verified chain for %s does not end at the cluster CA", name)
				}
			}
			if _, err := handshake(t, src, x509.NewCertPool(), "localhost"); err == nil {
				t.Error("a client that does not trust the cluster CA completed the handshake")
			}
		})
	}
}
