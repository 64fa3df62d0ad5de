package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

func TestGenerate(t *testing.T) {
	a := newTestAuthority(t)
	ca := a.X509CA()

	if got, want := a.Cluster(), "prod"; got != want {
		t.Errorf("Cluster() = %q; want %q", got, want)
	}
	if got, want := a.MaxTTL(), ClusterMaxTTL; got != want {
		t.Errorf("MaxTTL() = %v; want %v", got, want)
	}
	if got, want := ca.Subject.CommonName, "prod tunnel CA"; got != want {
		t.Errorf("CA CN = %q; want %q", got, want)
	}
	if !ca.BasicConstraintsValid || !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA basic constraints: valid=%v isCA=%v maxPathLen=%d zero=%v; want true true 0 true",
			ca.BasicConstraintsValid, ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero)
	}
	if got, want := ca.KeyUsage, x509.KeyUsageCertSign|x509.KeyUsageCRLSign; got != want {
		t.Errorf("CA key usage = %v; want %v", got, want)
	}
	if got, want := ca.PublicKeyAlgorithm, x509.ECDSA; got != want {
		t.Errorf("CA key algorithm = %v; want %v", got, want)
	}
	if got, want := a.X509KeyType(), "ECDSA P-256"; got != want {
		t.Errorf("X509KeyType() = %q; want %q", got, want)
	}
	if got, want := ca.SignatureAlgorithm, x509.ECDSAWithSHA256; got != want {
		t.Errorf("CA signature algorithm = %v; want %v", got, want)
	}
	if got, want := ca.NotBefore, testNow.Add(-ClockSkew); !got.Equal(want) {
		t.Errorf("CA NotBefore = %v; want %v", got, want)
	}
	if got, want := ca.NotAfter, testNow.Add(CALifetime); !got.Equal(want) {
		t.Errorf("CA NotAfter = %v; want %v", got, want)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA self-signature: %v", err)
	}
	if len(ca.SubjectKeyId) == 0 {
		t.Errorf("CA has no SubjectKeyId")
	}
	if ca.SerialNumber.Sign() <= 0 {
		t.Errorf("CA serial = %v; want positive", ca.SerialNumber)
	}
	if got, want := a.Pin(), trust.Pin(ca); got != want {
		t.Errorf("Pin() = %q; want %q", got, want)
	}
	if _, err := trust.ParsePin(a.Pin()); err != nil {
		t.Errorf("ParsePin(Pin()): %v", err)
	}
	if got := len(a.X509CAs()); got != 1 {
		t.Errorf("len(X509CAs()) = %d; want 1", got)
	}

	for _, k := range []ssh.PublicKey{a.SSHUserCA(), a.SSHHostCA()} {
		if got, want := k.Type(), ssh.KeyAlgoED25519; got != want {
			t.Errorf("SSH CA type = %q; want %q", got, want)
		}
	}
	keys := [][]byte{ca.RawSubjectPublicKeyInfo, a.SSHUserCA().Marshal(), a.SSHHostCA().Marshal()}
	x509Pub := newSSHKey(t, ca.PublicKey).Marshal()
	if bytes.Equal(x509Pub, keys[1]) || bytes.Equal(x509Pub, keys[2]) || bytes.Equal(keys[1], keys[2]) {
		t.Errorf("the three CA keys are not distinct")
	}
	if got := len(a.SSHUserCAs()); got != 1 {
		t.Errorf("len(SSHUserCAs()) = %d; want 1", got)
	}
	if got := len(a.SSHHostCAs()); got != 1 {
		t.Errorf("len(SSHHostCAs()) = %d; want 1", got)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		want    error
		wantMax time.Duration
	}{
		{name: "defaults", cfg: Config{Cluster: "prod"}, wantMax: ClusterMaxTTL},
		{name: "lower max", cfg: Config{Cluster: "prod", MaxTTL: 2 * time.Hour}, wantMax: 2 * time.Hour},
		{name: "max equal to hard max", cfg: Config{Cluster: "prod", MaxTTL: ClusterMaxTTL}, wantMax: ClusterMaxTTL},
		{name: "max above hard max", cfg: Config{Cluster: "prod", MaxTTL: 13 * time.Hour}, want: ErrTTLTooLong},
		{name: "negative max", cfg: Config{Cluster: "prod", MaxTTL: -time.Hour}, want: errAny},
		{name: "no cluster", cfg: Config{}, want: identity.ErrInvalidName},
		{name: "bad cluster", cfg: Config{Cluster: "Prod/1"}, want: identity.ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Generate(tt.cfg)
			if tt.want == errAny {
				if err == nil {
					t.Fatalf("got no error; want one")
				}
				return
			}
			checkErr(t, err, tt.want)
			if err != nil {
				return
			}
			if got := a.MaxTTL(); got != tt.wantMax {
				t.Errorf("MaxTTL() = %v; want %v", got, tt.wantMax)
			}
		})
	}
}

// errAny in a table means "some error".
var errAny = errors.New("any error")

func TestConfigMaxTTLMessage(t *testing.T) {
	_, err := Generate(Config{Cluster: "prod", MaxTTL: 24 * time.Hour})
	if err == nil || !strings.Contains(err.Error(), "24h0m0s exceeds the hard cluster maximum of 12h0m0s") {
		t.Errorf("got error %v; want it to explain 24h0m0s exceeds 12h0m0s", err)
	}
}

func TestZeroRandRefused(t *testing.T) {
	_, err := Generate(Config{Cluster: "prod", Rand: zeroReader{}})
	if err == nil || !strings.Contains(err.Error(), "only zeros") {
		t.Errorf("got error %v; want one about a random source of zeros", err)
	}
}

func testSealer(t testing.TB, b byte) seal.Sealer {
	t.Helper()
	s, err := seal.NewAESGCM(bytes.Repeat([]byte{b}, seal.KeySize), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestExportLoad(t *testing.T) {
	a := newTestAuthority(t)
	s := testSealer(t, 7)
	keys, err := a.Export(s)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}

	wantPublic := map[string][]byte{
		"x509":     a.X509CA().Raw,
		"ssh-user": a.SSHUserCA().Marshal(),
		"ssh-host": a.SSHHostCA().Marshal(),
	}
	x509Key := a.ks().xca.key.(*ecdsa.PrivateKey)
	x509Raw, err := x509Key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	privates := map[string]crypto.Signer{
		"x509":     x509Key,
		"ssh-user": a.ks().userCA.key.(ed25519.PrivateKey),
		"ssh-host": a.ks().hostCA.key.(ed25519.PrivateKey),
	}
	raws := map[string][]byte{
		"x509":     x509Raw,
		"ssh-user": a.ks().userCA.key.(ed25519.PrivateKey).Seed(),
		"ssh-host": a.ks().hostCA.key.(ed25519.PrivateKey).Seed(),
	}
	if got, want := len(keys), 3; got != want {
		t.Fatalf("Export returned %d keys; want %d", got, want)
	}
	for _, k := range keys {
		if !bytes.Equal(k.Public, wantPublic[k.Kind]) {
			t.Errorf("%s: Public is not the CA's public key", k.Kind)
		}
		if !k.Active {
			t.Errorf("%s: Active = false; want true", k.Kind)
		}
		if !k.CreatedAt.Equal(testNow) {
			t.Errorf("%s: CreatedAt = %v; want %v", k.Kind, k.CreatedAt, testNow)
		}
		priv := privates[k.Kind]
		if raw := raws[k.Kind]; bytes.Contains(k.SealedPrivate, raw) || bytes.Contains(k.SealedPrivate, raw[:16]) {
			t.Errorf("%s: sealed private key holds the raw private key", k.Kind)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(k.SealedPrivate, der[len(der)-16:]) {
			t.Errorf("%s: sealed private key holds the PKCS#8 encoding", k.Kind)
		}
		// The label binds each key to its kind.
		if _, err := s.Open(k.SealedPrivate, "ca/"+k.Kind); err != nil {
			t.Errorf("%s: open with label ca/%s: %v", k.Kind, k.Kind, err)
		}
	}

	b, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, keys, s)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := b.Pin(), a.Pin(); got != want {
		t.Errorf("loaded Pin() = %q; want %q", got, want)
	}
	if !bytes.Equal(b.SSHUserCA().Marshal(), a.SSHUserCA().Marshal()) {
		t.Errorf("loaded SSH user CA differs from the original")
	}
	if !bytes.Equal(b.SSHHostCA().Marshal(), a.SSHHostCA().Marshal()) {
		t.Errorf("loaded SSH host CA differs from the original")
	}

	// The loaded authority signs certificates that the original's keys verify.
	pub, _ := newEd25519(t)
	cert, err := b.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub})
	if err != nil {
		t.Fatalf("IssueX509Client: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.X509Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate from loaded CA does not verify against the original: %v", err)
	}
	sshCert, err := b.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: newSSHKey(t, pub)})
	if err != nil {
		t.Fatalf("IssueSSHUser: %v", err)
	}
	checker := ssh.CertChecker{IsUserAuthority: isKey(a.SSHUserCA()), Clock: fixedClock(testNow)}
	if err := checker.CheckCert("alice", sshCert); err != nil {
		t.Errorf("SSH certificate from loaded CA refused by the original's user CA: %v", err)
	}
	hostCert, err := b.IssueSSHHost(SSHHostRequest{Host: "db1", Principals: []string{"db1"}, PublicKey: newSSHKey(t, pub)})
	if err != nil {
		t.Fatalf("IssueSSHHost: %v", err)
	}
	hostChecker := ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return isKey(a.SSHHostCA())(k) }, Clock: fixedClock(testNow)}
	if err := hostChecker.CheckHostKey("db1:22", nil, hostCert); err != nil {
		t.Errorf("SSH host certificate from loaded CA refused by the original's host CA: %v", err)
	}
}

func isKey(want ssh.PublicKey) func(ssh.PublicKey) bool {
	return func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), want.Marshal()) }
}

func TestLoadWrongSealer(t *testing.T) {
	a := newTestAuthority(t)
	keys, err := a.Export(testSealer(t, 7))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(Config{Cluster: "prod"}, keys, testSealer(t, 8))
	if !errors.Is(err, seal.ErrOpen) {
		t.Errorf("got error %v; want one wrapping seal.ErrOpen", err)
	}
	if err == nil || !strings.Contains(err.Error(), "key-encryption key") {
		t.Errorf("got error %v; want it to mention the key-encryption key", err)
	}
}

func TestLoadRefused(t *testing.T) {
	s := testSealer(t, 7)
	a := newTestAuthority(t)
	keys, err := a.Export(s)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	byKind := func(ks []store.CAKey, kind string) store.CAKey {
		for _, k := range ks {
			if k.Kind == kind {
				return k
			}
		}
		t.Fatalf("no %s key", kind)
		return store.CAKey{}
	}
	without := func(kind string) []store.CAKey {
		var out []store.CAKey
		for _, k := range keys {
			if k.Kind != kind {
				out = append(out, k)
			}
		}
		return out
	}
	mismatched := byKind(keys, "ssh-user")
	mismatched.SealedPrivate = byKind(other, "ssh-user").SealedPrivate
	swapped := byKind(keys, "ssh-host")
	swapped.SealedPrivate = byKind(keys, "ssh-user").SealedPrivate
	corrupt := byKind(keys, "x509")
	corrupt.Public = corrupt.Public[:len(corrupt.Public)-1]
	notCA := byKind(keys, "x509")
	{
		pub, _ := newEd25519(t)
		leaf, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		notCA.Public = leaf.Raw
		notCA.Active = false
	}

	tests := []struct {
		name string
		keys []store.CAKey
		want string
	}{
		{"no keys", nil, "no active x509 CA key"},
		{"no x509", without("x509"), "no active x509 CA key"},
		{"no ssh-user", without("ssh-user"), "no active ssh-user CA key"},
		{"no ssh-host", without("ssh-host"), "no active ssh-host CA key"},
		{"two active", append(slicesClone(keys), byKind(other, "ssh-host")), "2 active ssh-host CA keys"},
		{"only inactive", append(without("ssh-user"), inactive(byKind(keys, "ssh-user"))), "no active ssh-user CA key"},
		{"unknown kind", append(slicesClone(keys), store.CAKey{Kind: "pgp"}), `unknown CA key kind "pgp"`},
		{"private key of another CA", append(without("ssh-user"), mismatched), "does not match its public key"},
		{"private key of another kind", append(without("ssh-host"), swapped), "cannot open"},
		{"corrupt certificate", append(without("x509"), corrupt), "parsing CA certificate"},
		{"leaf as CA", append(slicesClone(keys), notCA), "not a CA certificate"},
		{"corrupt ssh key", append(slicesClone(keys), store.CAKey{Kind: "ssh-user", Public: []byte("junk")}), "parsing SSH CA public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(Config{Cluster: "prod"}, tt.keys, s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v; want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := Load(Config{Cluster: "prod"}, keys, nil); err == nil {
		t.Errorf("Load with a nil sealer: got no error; want one")
	}
}

func slicesClone(ks []store.CAKey) []store.CAKey { return append([]store.CAKey(nil), ks...) }

func inactive(k store.CAKey) store.CAKey {
	k.Active = false
	return k
}

// TestRotation loads a new active CA set with the old one inactive: the new
// keys sign, and certificates of both are trusted.
func TestRotation(t *testing.T) {
	s := testSealer(t, 7)
	old := newTestAuthority(t)
	oldKeys, err := old.Export(s)
	if err != nil {
		t.Fatal(err)
	}
	newer := newTestAuthority(t)
	newKeys, err := newer.Export(s)
	if err != nil {
		t.Fatal(err)
	}
	var keys []store.CAKey
	for _, k := range oldKeys {
		k.Active = false
		k.SealedPrivate = nil // inactive keys are never opened
		keys = append(keys, k)
	}
	keys = append(keys, newKeys...)
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, keys, s)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	if got, want := a.Pin(), newer.Pin(); got != want {
		t.Errorf("Pin() = %q; want the new CA's %q", got, want)
	}
	if got, want := len(a.X509CAs()), 2; got != want {
		t.Errorf("len(X509CAs()) = %d; want %d", got, want)
	}
	for name, got := range map[string][]ssh.PublicKey{"user": a.SSHUserCAs(), "host": a.SSHHostCAs()} {
		if len(got) != 2 {
			t.Errorf("%s CAs: got %d; want 2", name, len(got))
		}
	}
	if !isKey(newer.SSHUserCA())(a.SSHUserCAs()[0]) || !isKey(old.SSHUserCA())(a.SSHUserCAs()[1]) {
		t.Errorf("SSHUserCAs() is not [new, old]")
	}
	if !isKey(newer.SSHHostCA())(a.SSHHostCA()) {
		t.Errorf("SSHHostCA() is not the new host CA")
	}

	pub, _ := newEd25519(t)
	req := X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db1"}, PublicKey: pub}
	opts := x509.VerifyOptions{Roots: a.X509Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for name, ca := range map[string]*Authority{"old": old, "loaded": a} {
		cert, err := ca.IssueX509Client(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(opts); err != nil {
			t.Errorf("certificate of the %s CA: %v", name, err)
		}
	}
	cert, err := a.IssueX509Client(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(newer.X509CA()); err != nil {
		t.Errorf("loaded CA did not sign with the new key: %v", err)
	}
}

func TestSerials(t *testing.T) {
	a := newTestAuthority(t)
	pub, _ := newEd25519(t)
	sshPub := newSSHKey(t, pub)
	const n = 200
	x509Seen := map[string]bool{}
	sshSeen := map[uint64]bool{}
	for range n {
		c, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
			t.Fatalf("X.509 serial %v; want positive and at most 128 bits", c.SerialNumber)
		}
		hex := X509SerialHex(c)
		if got, want := hex, c.SerialNumber.Text(16); got != want {
			t.Fatalf("X509SerialHex = %q; want %q", got, want)
		}
		if x509Seen[hex] {
			t.Fatalf("X.509 serial %s issued twice", hex)
		}
		x509Seen[hex] = true

		s, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: sshPub})
		if err != nil {
			t.Fatal(err)
		}
		if s.Serial == 0 || sshSeen[s.Serial] {
			t.Fatalf("SSH serial %d is zero or was issued twice", s.Serial)
		}
		sshSeen[s.Serial] = true
		if got, want := SSHSerialHex(s), fmt.Sprintf("%x", s.Serial); got != want {
			t.Fatalf("SSHSerialHex = %q; want %q", got, want)
		}
	}
	// With 128 random bits, some serial has its top byte set: the serial
	// really is that wide.
	wide := false
	for hex := range x509Seen {
		wide = wide || len(hex) == 32
	}
	if !wide {
		t.Errorf("no X.509 serial among %d used all 128 bits", n)
	}
	if X509SerialHex(nil) != "" || SSHSerialHex(nil) != "" {
		t.Errorf("serial of a nil certificate is not empty")
	}
}

// TestDeterministicRand shows that Config.Rand is the source of keys and
// serials: two authorities with the same seeded source agree.
func TestDeterministicRand(t *testing.T) {
	pub, _ := newEd25519(t)
	issue := func(seed byte) (pin string, serials []string) {
		var s [32]byte
		s[0] = seed
		a, err := Generate(Config{Cluster: "prod", Clock: fixedClock(testNow), Rand: mathrand.NewChaCha8(s)})
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			c, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub})
			if err != nil {
				t.Fatal(err)
			}
			sc, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: newSSHKey(t, pub)})
			if err != nil {
				t.Fatal(err)
			}
			serials = append(serials, X509SerialHex(c), SSHSerialHex(sc))
		}
		return a.Pin() + " " + string(a.SSHUserCA().Marshal()), serials
	}
	pin1, serials1 := issue(1)
	pin2, serials2 := issue(1)
	if pin1 != pin2 {
		t.Errorf("same seed gave different CA keys")
	}
	if diff := cmp.Diff(serials1, serials2); diff != "" {
		t.Errorf("same seed gave different serials (-first +second):\n%s", diff)
	}
	pin3, serials3 := issue(2)
	if pin1 == pin3 || cmp.Equal(serials1, serials3) {
		t.Errorf("different seeds gave the same keys or serials")
	}
}

// TestConcurrentIssue runs issuance in parallel with a source that is not
// safe for concurrent use; run with -race.
func TestConcurrentIssue(t *testing.T) {
	a, err := Generate(Config{Cluster: "prod", Rand: mathrand.NewChaCha8([32]byte{})})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := newEd25519(t)
	sshPub := newSSHKey(t, pub)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub}); err != nil {
					errs <- err
					return
				}
				if _, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: sshPub}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
