package vaultkeys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// TestSignerSSHCertificate: a user certificate signed through Transit
// verifies with ssh.CertChecker against the Signer's public key, and the
// real ssh-keygen -L reads it, naming the Vault key as the signing CA.
func TestSignerSSHCertificate(t *testing.T) {
	keygen := testenv.LookPath(t, "ssh-keygen")
	srv := startVault(t, false)
	c := newClient(t, srv)
	ca := newSigner(t, c, "ssh-user-ca")
	if ca.Version() != 1 || ca.Describe() != "vault key ssh-user-ca version 1" {
		t.Errorf("Version %d, Describe %q; want 1, \"vault key ssh-user-ca version 1\"", ca.Version(), ca.Describe())
	}
	caSigner, err := ssh.NewSignerFromSigner(ca)
	if err != nil {
		t.Fatalf("NewSignerFromSigner: %v", err)
	}
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshUser, _ := ssh.NewPublicKey(userPub)
	now := time.Now()
	cert := &ssh.Certificate{
		Key: sshUser, Serial: 42, CertType: ssh.UserCert, KeyId: "alice@prod",
		ValidPrincipals: []string{"alice", "ubuntu"},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatalf("SignCert: %v", err)
	}
	checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
		return bytes.Equal(k.Marshal(), caSigner.PublicKey().Marshal())
	}}
	if _, err := checker.Authenticate(connMeta("alice"), cert); err != nil {
		t.Errorf("CertChecker refused the Vault-signed certificate: %v", err)
	}
	// A certificate altered after signing must not verify: the check can fail.
	bad := *cert
	bad.ValidPrincipals = []string{"root"}
	if _, err := checker.Authenticate(connMeta("root"), &bad); err == nil {
		t.Errorf("CertChecker accepted a certificate altered after signing")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "id-cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-L", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	fp := ssh.FingerprintSHA256(caSigner.PublicKey())
	for _, want := range []string{"ssh-ed25519-cert-v01@openssh.com user certificate", `Key ID: "alice@prod"`, "Signing CA: ED25519 " + fp, "alice", "ubuntu", "permit-pty"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ssh-keygen -L output lacks %q:\n%s", want, out)
		}
	}
	if n := ca.Signatures(); n != 1 {
		t.Errorf("Signatures() = %d; want 1", n)
	}
}

// TestSignerX509: a CA certificate self-signed through Transit and a leaf
// it signs verify with x509.Certificate.Verify and with the real openssl
// verify.
func TestSignerX509(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl")
	srv := startVault(t, false)
	c := newClient(t, srv)
	ca := newSigner(t, c, "x509-ca")
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "prod tunnel CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, ca.Public(), ca)
	if err != nil {
		t.Fatalf("self-signing the CA through Vault: %v", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafPub, _, _ := ed25519.GenerateKey(rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, leafPub, ca)
	if err != nil {
		t.Fatalf("signing a leaf through Vault: %v", err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("x509 Verify: %v", err)
	}

	dir := t.TempDir()
	caPath, leafPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "leaf.pem")
	_ = os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	_ = os.WriteFile(leafPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o600)
	out, err := exec.Command(openssl, "verify", "-CAfile", caPath, "-purpose", "sslclient", leafPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), leafPath+": OK") {
		t.Errorf("openssl verify: %v\n%s", err, out)
	}
	// The same leaf against another CA must fail: the check can fail.
	other := newSigner(t, c, "x509-other")
	otherDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, other.Public(), other)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER}), 0o600)
	if out, err := exec.Command(openssl, "verify", "-CAfile", caPath, leafPath).CombinedOutput(); err == nil {
		t.Errorf("openssl verify accepted the leaf under another CA:\n%s", out)
	}
}

// TestSignerPinnedVersion: after the key is rotated in Vault, an existing
// Signer keeps signing with its version (its signatures verify with its
// public key), and a new Signer uses the new version.
func TestSignerPinnedVersion(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	ctx := context.Background()
	s1 := newSigner(t, c, "rotating")
	if _, err := c.API().Logical().Write("transit/keys/rotating/rotate", nil); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	msg := []byte("certificate bytes")
	sig, v, err := s1.SignContext(ctx, msg)
	if err != nil || v != 1 {
		t.Fatalf("SignContext = version %d, %v; want 1", v, err)
	}
	if !ed25519.Verify(s1.Public().(ed25519.PublicKey), msg, sig) {
		t.Errorf("the version-1 signature does not verify")
	}
	s2, err := NewSigner(ctx, c, "rotating")
	if err != nil {
		t.Fatal(err)
	}
	sig2, err := s2.Sign(nil, msg, crypto.Hash(0))
	if err != nil || s2.Version() != 2 {
		t.Fatalf("new signer: version %d, %v; want 2", s2.Version(), err)
	}
	if bytes.Equal(s1.Public().(ed25519.PublicKey), s2.Public().(ed25519.PublicKey)) {
		t.Errorf("versions 1 and 2 have the same public key")
	}
	if !ed25519.Verify(s2.Public().(ed25519.PublicKey), msg, sig2) {
		t.Errorf("the version-2 signature does not verify")
	}
	// A digest is refused: Ed25519 signs the message.
	d := sha256.Sum256(msg)
	if _, err := s1.Sign(nil, d[:], crypto.SHA256); err == nil {
		t.Errorf("Sign with SHA-256 opts succeeded; want a refusal")
	}
}

// TestEnsureKey: EnsureKey is idempotent and refuses an existing key of
// another type or one that can be exported; a missing key is
// ErrKeyMissing with its name.
func TestEnsureKey(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	ctx := context.Background()
	newSigner(t, c, "ca")
	if created, err := c.EnsureKey(ctx, "ca", KeyEd25519); err != nil || created {
		t.Errorf("EnsureKey again = %v, %v; want false, nil", created, err)
	}
	if _, err := c.EnsureKey(ctx, "ca", KeyKEK); err == nil || !strings.Contains(err.Error(), "is ed25519, not aes256-gcm96") {
		t.Errorf("EnsureKey with another type: %v; want a type refusal", err)
	}
	k, err := c.API().Logical().Read("transit/keys/ca")
	if err != nil || k.Data["exportable"] != false {
		t.Errorf("key exportable = %v (%v); want false", k.Data["exportable"], err)
	}
	// A key made by someone else that can leave Vault is refused, not
	// taken (a rotation's key name is predictable).
	if _, err := c.API().Logical().Write("transit/keys/leaky", map[string]any{"type": "ed25519", "exportable": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsureKey(ctx, "leaky", KeyEd25519); err == nil || !strings.Contains(err.Error(), "can leave Vault") {
		t.Errorf("EnsureKey of an exportable key: %v; want a refusal", err)
	}
	if _, err := NewSigner(ctx, c, "leaky"); err == nil {
		t.Errorf("NewSigner took an exportable key")
	}
	_, err = NewSigner(ctx, c, "nokey")
	if !errorsIs(err, ErrKeyMissing) || !strings.Contains(err.Error(), `has no Transit key "nokey"`) {
		t.Errorf("NewSigner(nokey): %v; want ErrKeyMissing naming the key", err)
	}
	if _, err := NewSigner(ctx, c, "../sys"); err == nil {
		t.Errorf("NewSigner accepted a key name with a slash")
	}
}

type connMeta string

func (c connMeta) User() string        { return string(c) }
func (connMeta) SessionID() []byte     { return nil }
func (connMeta) ClientVersion() []byte { return nil }
func (connMeta) ServerVersion() []byte { return nil }
func (connMeta) RemoteAddr() net.Addr  { return nil }
func (connMeta) LocalAddr() net.Addr   { return nil }

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// TestSignerECDSA: an ECDSA P-256 Transit key signs through the same
// Signer (prehashed SHA-256, ASN.1 signatures): a CA certificate it
// self-signs and a leaf it signs verify with crypto/x509 and the real
// openssl verify, an SSH certificate with ssh.CertChecker; a digest of
// another hash is refused, and the Signer stays pinned to its version
// after a rotation in Vault.
func TestSignerECDSA(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl")
	srv := startVault(t, false)
	c := newClient(t, srv)
	ctx := context.Background()
	if created, err := c.EnsureKey(ctx, "x509-ca", KeyECDSAP256); err != nil || !created {
		t.Fatalf("EnsureKey(ecdsa-p256) = %v, %v; want created", created, err)
	}
	if created, err := c.EnsureKey(ctx, "x509-ca", KeyECDSAP256); err != nil || created {
		t.Fatalf("EnsureKey(ecdsa-p256) again = %v, %v; want false, nil", created, err)
	}
	if _, err := c.EnsureKey(ctx, "x509-ca", KeyEd25519); err == nil || !strings.Contains(err.Error(), "is ecdsa-p256, not ed25519") {
		t.Errorf("EnsureKey with another type: %v; want a type refusal", err)
	}
	ca, err := NewSigner(ctx, c, "x509-ca")
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	pub, ok := ca.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || ca.KeyType() != KeyECDSAP256 {
		t.Fatalf("Public() = %T, KeyType %q; want an ECDSA P-256 key", ca.Public(), ca.KeyType())
	}

	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "prod tunnel CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, ca.Public(), ca)
	if err != nil {
		t.Fatalf("self-signing the CA through Vault: %v", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	if caCert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("the CA certificate is signed with %v; want ECDSA-SHA256", caCert.SignatureAlgorithm)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, leafKey.Public(), ca)
	if err != nil {
		t.Fatalf("signing a leaf through Vault: %v", err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("x509 Verify: %v", err)
	}
	dir := t.TempDir()
	caPath, leafPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "leaf.pem")
	_ = os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	_ = os.WriteFile(leafPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o600)
	out, err := exec.Command(openssl, "verify", "-CAfile", caPath, "-purpose", "sslserver", leafPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), leafPath+": OK") {
		t.Errorf("openssl verify: %v\n%s", err, out)
	}
	// A certificate altered after signing must not verify: the check can fail.
	bad := bytes.Clone(leaf.RawTBSCertificate)
	bad[len(bad)/2] ^= 1
	if err := caCert.CheckSignature(leaf.SignatureAlgorithm, bad, leaf.Signature); err == nil {
		t.Error("an altered certificate checks against the Vault-signed CA")
	}

	// An SSH certificate: ecdsa-sha2-nistp256.
	caSigner, err := ssh.NewSignerFromSigner(ca)
	if err != nil {
		t.Fatalf("NewSignerFromSigner: %v", err)
	}
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshUser, _ := ssh.NewPublicKey(userPub)
	cert := &ssh.Certificate{Key: sshUser, Serial: 7, CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatalf("SignCert: %v", err)
	}
	checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), caSigner.PublicKey().Marshal()) }}
	if _, err := checker.Authenticate(connMeta("alice"), cert); err != nil {
		t.Errorf("CertChecker refused the Vault-signed certificate: %v", err)
	}

	// Refusals: a digest of another hash, a message instead of a digest.
	d := sha256.Sum256([]byte("x"))
	if _, err := ca.Sign(nil, d[:], crypto.Hash(0)); err == nil {
		t.Error("Sign without a hash succeeded; want a refusal")
	}
	if _, err := ca.Sign(nil, make([]byte, 48), crypto.SHA384); err == nil {
		t.Error("Sign with SHA-384 succeeded; want a refusal")
	}

	// Pinned to its version after a rotation in Vault.
	if _, err := c.API().Logical().Write("transit/keys/x509-ca/rotate", nil); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	msg := []byte("certificate bytes")
	sig, v, err := ca.SignContext(ctx, msg)
	if err != nil || v != 1 {
		t.Fatalf("SignContext = version %d, %v; want 1", v, err)
	}
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(pub, h[:], sig) {
		t.Error("the version-1 signature does not verify")
	}
	s2, err := NewSigner(ctx, c, "x509-ca")
	if err != nil || s2.Version() != 2 || s2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Fatalf("new signer after the rotation: version %d, %v; want version 2 with another key", s2.Version(), err)
	}
}
