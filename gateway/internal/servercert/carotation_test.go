package servercert

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// TestFromCAFollowsRotation: after a rotation's start the old CA still
// signs the gateway's certificate and both CAs are sent; once the new
// X.509 key is activated, the next handshake gets a certificate of the new
// CA, with a chain that peers pinning either CA verify.
func TestFromCAFollowsRotation(t *testing.T) {
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := seal.NewAESGCM(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := certs.Generate(certs.Config{Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := gen.Export(s)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.Load(certs.Config{Cluster: "prod"}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	src, err := FromCA(ca, "gw", []string{"gw.example"}, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldPin := ca.Pin()
	first, _ := src.GetCertificate(nil)

	k, err := ca.NewCAKey(store.CertX509, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, k)
	if err := ca.Reload(keys); err != nil {
		t.Fatal(err)
	}
	started, _ := src.GetCertificate(nil)
	if started.Leaf.CheckSignatureFrom(ca.X509CA()) != nil || len(started.Certificate) != 3 {
		t.Fatalf("after start: %d certificates in the chain, signed by the active CA: %v; want the old CA signing and both CAs sent",
			len(started.Certificate), started.Leaf.CheckSignatureFrom(ca.X509CA()))
	}

	for i := range keys {
		if keys[i].Kind == string(store.CertX509) {
			keys[i].Active = !keys[i].Active
		}
	}
	if err := ca.Reload(keys); err != nil {
		t.Fatal(err)
	}
	now, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(now.Leaf.Raw, first.Leaf.Raw) {
		t.Fatal("after activation the gateway still serves its certificate of the old CA")
	}
	if err := now.Leaf.CheckSignatureFrom(ca.X509CA()); err != nil {
		t.Fatalf("after activation the gateway's certificate is not the new CA's: %v", err)
	}
	for _, pin := range []string{oldPin, ca.Pin()} {
		if _, err := trust.VerifyPinned(now.Certificate, pin, "gw.example", time.Now()); err != nil {
			t.Errorf("a peer pinning %s refuses the gateway after activation: %v", pin, err)
		}
	}
}
