package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"io"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// The key types of the CAs: a new cluster's X.509 CA is ECDSA P-256 (the
// type browsers accept in a TLS chain), its SSH CAs Ed25519; a cluster
// made with an Ed25519 X.509 CA keeps it, and a rotation gives it an ECDSA
// one.

// newEd25519Authority makes a CA set as clusters were made before ECDSA
// became the X.509 CA's type: three local Ed25519 keys, sealed with s and
// loaded back from the store's records, as a gateway starting on such a
// cluster loads them.
func newEd25519Authority(t *testing.T) (*Authority, []store.CAKey) {
	t.Helper()
	var keys [3]ed25519.PrivateKey
	for i := range keys {
		_, keys[i] = newEd25519(t)
	}
	gen, err := GenerateWith(Config{Cluster: "prod", Clock: fixedClock(testNow)}, Signers{X509: keys[0], SSHUser: keys[1], SSHHost: keys[2]})
	if err != nil {
		t.Fatalf("GenerateWith (Ed25519): %v", err)
	}
	s := testSealer(t, 7)
	stored, err := gen.Export(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, stored, s)
	if err != nil {
		t.Fatalf("Load of an Ed25519 CA set: %v", err)
	}
	return a, stored
}

// isP256 reports whether pub is an ECDSA P-256 key.
func isP256(pub crypto.PublicKey) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}

// serverLeaf issues a gateway certificate for a new ECDSA P-256 key, as
// the gateway's servercert does.
func serverLeaf(t *testing.T, a *Authority) *x509.Certificate {
	t.Helper()
	leaf, err := a.IssueX509Server(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gateway"},
		PublicKey: newECDSA(t, elliptic.P256()).Public(), DNSNames: []string{"gw.example"}})
	if err != nil {
		t.Fatalf("IssueX509Server: %v", err)
	}
	return leaf
}

// TestNewCAKeyTypes: Generate makes an ECDSA P-256 X.509 CA whose
// signatures are ECDSA with SHA-256 (what browsers verify), and Ed25519
// SSH CAs; the X.509 CA signs Ed25519 and ECDSA leaves alike, and keeps
// its type through Export and Load; a rotation's new keys have the same
// types.
func TestNewCAKeyTypes(t *testing.T) {
	s := testSealer(t, 7)
	keys, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	ca := a.X509CA()
	if !isP256(ca.PublicKey) || ca.SignatureAlgorithm != x509.ECDSAWithSHA256 || a.X509KeyType() != "ECDSA P-256" {
		t.Fatalf("loaded X.509 CA: key %T (%s), signature %v; want ECDSA P-256 with SHA-256", ca.PublicKey, a.X509KeyType(), ca.SignatureAlgorithm)
	}
	if _, ok := a.ks().xca.key.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("loaded X.509 CA private key is %T; want *ecdsa.PrivateKey", a.ks().xca.key)
	}
	for _, k := range []ssh.PublicKey{a.SSHUserCA(), a.SSHHostCA()} {
		if k.Type() != ssh.KeyAlgoED25519 {
			t.Errorf("SSH CA type %q; want %q", k.Type(), ssh.KeyAlgoED25519)
		}
	}

	edPub, _ := newEd25519(t)
	client, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "web-1"}, PublicKey: edPub})
	if err != nil {
		t.Fatal(err)
	}
	server := serverLeaf(t, a)
	for name, c := range map[string]*x509.Certificate{"Ed25519 client": client, "ECDSA server": server} {
		if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s certificate signed with %v; want ECDSA-SHA256", name, c.SignatureAlgorithm)
		}
		if _, err := trust.VerifyClusterChain([]*x509.Certificate{c}, a.X509Pool(), "prod", testNow); err != nil {
			t.Errorf("%s certificate: %v", name, err)
		}
	}
	if _, err := server.Verify(x509.VerifyOptions{Roots: a.X509Pool(), DNSName: "gw.example", CurrentTime: testNow}); err != nil {
		t.Errorf("server certificate for gw.example: %v", err)
	}

	for kind, want := range map[store.CertKind]string{store.CertX509: "ECDSA P-256", store.CertSSHUser: "Ed25519", store.CertSSHHost: "Ed25519"} {
		k, err := a.NewCAKey(kind, s, nil)
		if err != nil {
			t.Fatalf("NewCAKey(%s): %v", kind, err)
		}
		var pub crypto.PublicKey
		if kind == store.CertX509 {
			c, _, _, err := parseCACerts(k.Public)
			if err != nil {
				t.Fatal(err)
			}
			pub = c.PublicKey
		} else {
			sk, err := ssh.ParsePublicKey(k.Public)
			if err != nil {
				t.Fatal(err)
			}
			pub = sk.(ssh.CryptoPublicKey).CryptoPublicKey()
		}
		if got := caKeyType(pub); got != want {
			t.Errorf("NewCAKey(%s) made a %s key; want %s", kind, got, want)
		}
	}
}

// TestEd25519CAStillWorks: a cluster whose X.509 CA is Ed25519 (made
// before ECDSA became the default) loads as it is, recognised by its
// type, and signs client, server and SSH certificates that verify.
func TestEd25519CAStillWorks(t *testing.T) {
	a, _ := newEd25519Authority(t)
	ca := a.X509CA()
	if ca.PublicKeyAlgorithm != x509.Ed25519 || a.X509KeyType() != "Ed25519" {
		t.Fatalf("loaded X.509 CA: %v (%s); want the Ed25519 CA it was made with", ca.PublicKeyAlgorithm, a.X509KeyType())
	}
	if _, ok := a.ks().xca.key.(ed25519.PrivateKey); !ok {
		t.Fatalf("loaded X.509 CA private key is %T; want ed25519.PrivateKey", a.ks().xca.key)
	}
	edPub, _ := newEd25519(t)
	client, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: edPub})
	if err != nil {
		t.Fatal(err)
	}
	server := serverLeaf(t, a)
	for name, c := range map[string]*x509.Certificate{"client": client, "server": server} {
		if c.SignatureAlgorithm != x509.PureEd25519 {
			t.Errorf("%s certificate signed with %v; want Ed25519", name, c.SignatureAlgorithm)
		}
		if _, err := trust.VerifyClusterChain([]*x509.Certificate{c}, a.X509Pool(), "prod", testNow); err != nil {
			t.Errorf("%s certificate of the Ed25519 CA: %v", name, err)
		}
	}
	if _, err := trust.VerifyPinned(a.ServerChain(server), a.Pin(), "gw.example", testNow); err != nil {
		t.Errorf("the gateway's chain for a peer pinning the Ed25519 CA: %v", err)
	}
	user, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: newSSHKey(t, edPub)})
	if err != nil {
		t.Fatal(err)
	}
	checker := ssh.CertChecker{IsUserAuthority: isKey(a.SSHUserCA()), Clock: fixedClock(testNow)}
	if err := checker.CheckCert("alice", user); err != nil {
		t.Errorf("SSH user certificate: %v", err)
	}
}

// TestRotationEd25519ToECDSA: rotating the X.509 CA of a cluster made
// with an Ed25519 one gives it an ECDSA P-256 CA, cross-signed by the old
// CA across the key types: once the new CA signs, a peer that trusts only
// the old Ed25519 CA still verifies the gateway's certificate through the
// cross-signature, and a peer that trusts only the new one verifies it
// with ECDSA signatures alone (as a browser must).
func TestRotationEd25519ToECDSA(t *testing.T) {
	a, stored := newEd25519Authority(t)
	s := testSealer(t, 7)
	oldCA, oldPin := a.X509CA(), a.Pin()
	oldLeaf := serverLeaf(t, a)

	k, err := a.NewCAKey(store.CertX509, s, nil)
	if err != nil {
		t.Fatalf("NewCAKey(x509) on an Ed25519 CA: %v", err)
	}
	newCA, cross, prev, err := parseCACerts(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	if !isP256(newCA.PublicKey) || newCA.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("the new X.509 CA: key %T, signature %v; want ECDSA P-256 with SHA-256", newCA.PublicKey, newCA.SignatureAlgorithm)
	}
	if len(cross) != 1 || len(prev) != 1 || !prev[0].Equal(oldCA) {
		t.Fatalf("%d cross-signatures, %d previous CAs; want 1 of each, the previous one the Ed25519 CA", len(cross), len(prev))
	}
	if !isP256(cross[0].PublicKey) || cross[0].SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("the cross-signature: key %T, signature %v; want the ECDSA key signed with Ed25519", cross[0].PublicKey, cross[0].SignatureAlgorithm)
	}
	if err := cross[0].CheckSignatureFrom(oldCA); err != nil {
		t.Fatalf("the cross-signature does not check against the Ed25519 CA: %v", err)
	}

	// start, then activate.
	started := append(append([]store.CAKey(nil), stored...), k)
	if err := a.Reload(started); err != nil {
		t.Fatalf("Reload after start: %v", err)
	}
	activated := make([]store.CAKey, len(started))
	for i, key := range started {
		if key.Kind == string(store.CertX509) {
			key.Active = !key.Active
		}
		activated[i] = key
	}
	if err := a.Reload(activated); err != nil {
		t.Fatalf("Reload after activate: %v", err)
	}
	if a.X509KeyType() != "ECDSA P-256" || !a.X509CA().Equal(newCA) {
		t.Fatalf("after activate the active X.509 CA is %s; want the new ECDSA P-256 one", a.X509KeyType())
	}
	newPin := a.Pin()

	// finish: only the new key is stored, with its cross-signature.
	var finished []store.CAKey
	for _, key := range activated {
		if key.Kind != string(store.CertX509) || key.Active {
			finished = append(finished, key)
		}
	}
	for _, step := range []struct {
		phase string
		keys  []store.CAKey
	}{{"activate", activated}, {"finish", finished}} {
		phase := step.phase
		if err := a.Reload(step.keys); err != nil {
			t.Fatalf("Reload after %s: %v", phase, err)
		}
		leaf := serverLeaf(t, a)
		if leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("after %s the gateway's certificate is signed with %v; want ECDSA-SHA256", phase, leaf.SignatureAlgorithm)
		}
		chain := a.ServerChain(leaf)
		inter := x509.NewCertPool()
		for _, raw := range chain[1:] {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				t.Fatal(err)
			}
			inter.AddCert(c)
		}
		// A peer that trusts only the old Ed25519 CA (its pin, as agents
		// and clients hold it): the chain carries the cross-signature, the
		// new CA signed by the old one, which anchors the leaf
		// (trust.VerifyPinned; the old CA's path length of zero keeps it
		// from being a plain intermediate).
		if !slices.ContainsFunc(chain, func(raw []byte) bool { return bytes.Equal(raw, cross[0].Raw) }) {
			t.Errorf("after %s the gateway's chain lacks the cross-signature by the Ed25519 CA", phase)
		}
		if _, err := trust.VerifyPinned(chain, oldPin, "gw.example", testNow); err != nil {
			t.Errorf("after %s a peer pinning the old Ed25519 CA refuses the gateway's new certificate: %v", phase, err)
		}
		// A peer trusting only the new ECDSA CA: every signature on its
		// path is ECDSA.
		newOnly := x509.NewCertPool()
		newOnly.AddCert(newCA)
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: newOnly, Intermediates: inter, DNSName: "gw.example", CurrentTime: testNow})
		if err != nil {
			t.Errorf("after %s a peer trusting only the new CA refuses the gateway: %v", phase, err)
		} else {
			for _, c := range chains[0] {
				if c.SignatureAlgorithm != x509.ECDSAWithSHA256 || !isP256(c.PublicKey) {
					t.Errorf("after %s the new-CA chain holds %s (%v, %T); want ECDSA P-256 only", phase, c.Subject, c.SignatureAlgorithm, c.PublicKey)
				}
			}
		}
		if _, err := trust.VerifyPinned(chain, newPin, "gw.example", testNow); err != nil {
			t.Errorf("after %s a peer pinning the new CA refuses the gateway: %v", phase, err)
		}
	}
	// After finish, what the old CA signed is refused.
	if _, err := trust.VerifyPinned(a.ServerChain(oldLeaf), newPin, "gw.example", testNow); err == nil {
		t.Error("after finish a peer pinning the new CA accepts a gateway certificate of the removed Ed25519 CA")
	}
}

// TestP256KeyFromRand: with a source other than crypto/rand's (a seeded
// Config.Rand), the X.509 CA key comes from it: a draw outside [1, n-1]
// is drawn again, and a source that gives nothing else is refused.
func TestP256KeyFromRand(t *testing.T) {
	valid := bytes.Repeat([]byte{0x11}, 32)
	over := bytes.Repeat([]byte{0xff}, 32) // above the order of P-256
	k, err := newP256Key(io.MultiReader(bytes.NewReader(over), bytes.NewReader(make([]byte, 32)), bytes.NewReader(valid)), false)
	if err != nil {
		t.Fatalf("newP256Key: %v", err)
	}
	if got, _ := k.Bytes(); !bytes.Equal(got, valid) {
		t.Errorf("the key is %x; want the first draw in range, %x", got, valid)
	}
	if _, err := newP256Key(bytes.NewReader(bytes.Repeat(over, maxSerialTries)), false); err == nil || !strings.Contains(err.Error(), "out-of-range") {
		t.Errorf("a source of out-of-range values: got %v; want a refusal", err)
	}
	if _, err := newP256Key(bytes.NewReader(valid[:16]), false); err == nil {
		t.Error("a short source: got a key; want an error")
	}
}
