package certs

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/sshcert"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// issued is one certificate of each kind, signed by one generation of
// keys.
type issued struct {
	client *x509.Certificate
	server *x509.Certificate
	user   *ssh.Certificate
	host   *ssh.Certificate
}

func issueAll(t *testing.T, a *Authority) issued {
	t.Helper()
	pub, _ := newEd25519(t)
	var (
		out issued
		err error
	)
	if out.client, err = a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "web-1"}, PublicKey: pub}); err != nil {
		t.Fatal(err)
	}
	if out.server, err = a.IssueX509Server(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gateway"}, PublicKey: pub, DNSNames: []string{"gw.example"}}); err != nil {
		t.Fatal(err)
	}
	if out.user, err = a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"ubuntu"}, PublicKey: newSSHKey(t, pub)}); err != nil {
		t.Fatal(err)
	}
	if out.host, err = a.IssueSSHHost(SSHHostRequest{Host: "web-1", Principals: []string{"web-1"}, PublicKey: newSSHKey(t, pub)}); err != nil {
		t.Fatal(err)
	}
	return out
}

// trusts reports which of c's certificates a's trust set accepts: the X.509
// client certificate by the one chain check of the cluster, the SSH user
// certificate by the SSH endpoints' checker, the host certificate as a
// client's known_hosts would.
func trusts(t *testing.T, a *Authority, c issued) (x509OK, userOK, hostOK bool) {
	t.Helper()
	_, err := trust.VerifyClusterChain([]*x509.Certificate{c.client}, a.X509Pool(), "prod", testNow)
	if err != nil && !errors.Is(err, trust.ErrNotIssued) {
		t.Fatalf("VerifyClusterChain: %v; want nil or ErrNotIssued", err)
	}
	// The shared pool (X509Roots, what the gateway's chain cache keys on)
	// says the same as a copy.
	if _, rerr := trust.VerifyClusterChain([]*x509.Certificate{c.client}, a.X509Roots(), "prod", testNow); (rerr == nil) != (err == nil) {
		t.Errorf("X509Roots and X509Pool disagree: %v against %v", rerr, err)
	}
	x509OK = err == nil
	checker := &sshcert.Checker{UserCAs: a.SSHUserCAs, Clock: fixedClock(testNow)}
	_, err = checker.Check(c.user, "ubuntu", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 22})
	if err != nil && !errors.Is(err, sshcert.ErrUntrustedCA) {
		t.Fatalf("Check: %v; want nil or ErrUntrustedCA", err)
	}
	userOK = err == nil
	for _, k := range a.SSHHostCAs() {
		if bytes.Equal(k.Marshal(), c.host.SignatureKey.Marshal()) {
			hostOK = true
		}
	}
	return x509OK, userOK, hostOK
}

// pinnedOK reports whether a peer pinning pin accepts the gateway's chain
// for server, as a reloaded Authority serves it.
func pinnedOK(a *Authority, server *x509.Certificate, pin string) bool {
	_, err := trust.VerifyPinned(a.ServerChain(server), pin, "gw.example", testNow)
	return err == nil
}

// TestRotationPhases: during a rotation both CAs of each kind are trusted, the
// new one signs once activated, and after finish only what the new one
// signed is accepted; a peer pinning the old X.509 CA verifies a gateway
// certificate of the new one until finish.
func TestRotationPhases(t *testing.T) {
	s := testSealer(t, 7)
	keys, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	oldPin := a.Pin()
	old := issueAll(t, a)
	roots := a.X509Roots()
	if a.X509Roots() != roots {
		t.Fatal("X509Roots returns another pool at each call; a cache keyed on it would never hit")
	}
	kinds := []store.CertKind{store.CertX509, store.CertSSHUser, store.CertSSHHost}

	// start: a new key per kind, inactive.
	var newKeys []store.CAKey
	for _, kind := range kinds {
		k, err := a.NewCAKey(kind, s, nil)
		if err != nil {
			t.Fatalf("NewCAKey(%s): %v", kind, err)
		}
		if k.Active || k.Kind != string(kind) || !k.CreatedAt.Equal(testNow) {
			t.Fatalf("NewCAKey(%s) = active %v, kind %q, created %v; want an inactive %s key created now", kind, k.Active, k.Kind, k.CreatedAt, kind)
		}
		newKeys = append(newKeys, k)
	}
	started := append(append([]store.CAKey(nil), keys...), newKeys...)
	if err := a.Reload(started); err != nil {
		t.Fatalf("Reload after start: %v", err)
	}
	if a.Pin() != oldPin {
		t.Fatal("after start the pin changed; the old CA must sign until activation")
	}
	if a.X509Roots() == roots {
		t.Fatal("after a reload X509Roots is the old pool; a chain cache keyed on it would keep old verdicts")
	}
	if n := len(a.X509CAs()); n != 2 || len(a.SSHUserCAs()) != 2 || len(a.SSHHostCAs()) != 2 {
		t.Fatalf("after start %d X.509, %d user, %d host CAs trusted; want 2 of each", n, len(a.SSHUserCAs()), len(a.SSHHostCAs()))
	}
	mid := issueAll(t, a)
	if err := mid.client.CheckSignatureFrom(old.client); err == nil {
		t.Fatal("a client certificate checks as a CA") // sanity: CheckSignatureFrom needs a CA
	}
	if !bytes.Equal(mid.user.SignatureKey.Marshal(), old.user.SignatureKey.Marshal()) {
		t.Fatal("after start the SSH user certificate is signed by another key; the old one must sign until activation")
	}

	// activate: the new keys sign.
	activated := make([]store.CAKey, len(started))
	for i, k := range started {
		k.Active = i >= len(keys)
		activated[i] = k
	}
	if err := a.Reload(activated); err != nil {
		t.Fatalf("Reload after activate: %v", err)
	}
	newPin := a.Pin()
	if newPin == oldPin {
		t.Fatal("after activate the pin is the old CA's")
	}
	fresh := issueAll(t, a)
	for name, c := range map[string]issued{"old": old, "new": fresh} {
		if x, u, h := trusts(t, a, c); !x || !u || !h {
			t.Errorf("during the rotation the %s CA's certificates: X.509 %v, SSH user %v, SSH host %v; want all trusted", name, x, u, h)
		}
	}
	if bytes.Equal(fresh.user.SignatureKey.Marshal(), old.user.SignatureKey.Marshal()) ||
		bytes.Equal(fresh.host.SignatureKey.Marshal(), old.host.SignatureKey.Marshal()) {
		t.Fatal("after activate SSH certificates are still signed by the old keys")
	}
	if err := fresh.client.CheckSignatureFrom(a.X509CA()); err != nil {
		t.Fatalf("after activate the client certificate is not signed by the active CA: %v", err)
	}
	for pin, name := range map[string]string{oldPin: "old", newPin: "new"} {
		if !pinnedOK(a, fresh.server, pin) {
			t.Errorf("during the rotation a peer pinning the %s CA refuses the gateway's new certificate", name)
		}
		if !pinnedOK(a, old.server, pin) && name == "old" {
			t.Errorf("during the rotation a peer pinning the old CA refuses the gateway's old certificate")
		}
	}

	// finish: the old keys are removed.
	roots = a.X509Roots()
	if err := a.Reload(activated[len(keys):]); err != nil {
		t.Fatalf("Reload after finish: %v", err)
	}
	if a.X509Roots() == roots {
		t.Fatal("after finish X509Roots is the pool that trusted the old CA")
	}
	if x, u, h := trusts(t, a, old); x || u || h {
		t.Errorf("after finish the old CA's certificates: X.509 %v, SSH user %v, SSH host %v; want all refused", x, u, h)
	}
	if x, u, h := trusts(t, a, fresh); !x || !u || !h {
		t.Errorf("after finish the new CA's certificates: X.509 %v, SSH user %v, SSH host %v; want all trusted", x, u, h)
	}
	// A peer still pinning the old CA authenticates the gateway through
	// the cross-signature, but a gateway certificate the old CA signed is
	// refused, whatever the pin.
	if !pinnedOK(a, fresh.server, oldPin) {
		t.Error("after finish a peer pinning the old CA refuses the gateway's certificate of the new CA")
	}
	if !pinnedOK(a, fresh.server, newPin) {
		t.Error("after finish a peer pinning the new CA refuses the gateway")
	}
	for pin, name := range map[string]string{oldPin: "old", newPin: "new"} {
		if pinnedOK(a, old.server, pin) {
			t.Errorf("after finish a peer pinning the %s CA accepts a gateway certificate of the old CA", name)
		}
	}
	if n := len(a.ServerChain(fresh.server)); n != 4 {
		t.Errorf("after finish the gateway's chain has %d certificates; want 4 (leaf, CA, cross-signature, old CA)", n)
	}
}

// TestReloadKeepsKeysOnError: a store without an active key of a kind is
// refused and the keys in use stay; an Authority not loaded from a store
// cannot reload.
func TestReloadKeepsKeysOnError(t *testing.T) {
	s := testSealer(t, 7)
	keys, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	pin := a.Pin()
	if err := a.Reload(keys[1:]); err == nil {
		t.Fatal("Reload without an active X.509 key succeeded")
	}
	if a.Pin() != pin {
		t.Fatal("a failed Reload changed the keys in use")
	}
	if err := newTestAuthority(t).Reload(keys); err == nil {
		t.Fatal("Reload of a generated authority succeeded")
	}
}

// TestNewCAKeyCrossSigned: a new X.509 key is stored with its CA
// certificate and a cross-signature by the active CA, and Load reads both.
func TestNewCAKeyCrossSigned(t *testing.T) {
	a := newTestAuthority(t)
	k, err := a.NewCAKey(store.CertX509, testSealer(t, 7), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, cross, prev, err := parseCACerts(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	if len(cross) != 1 || len(prev) != 1 || !prev[0].Equal(a.X509CA()) {
		t.Fatalf("%d cross-signatures and %d previous CAs; want 1 of each, the previous one the active CA", len(cross), len(prev))
	}
	if err := cross[0].CheckSignatureFrom(a.X509CA()); err != nil {
		t.Fatalf("the cross-signature is not the active CA's: %v", err)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("the new CA certificate is not self-signed: %v", err)
	}
	if cross[0].SerialNumber.Cmp(ca.SerialNumber) == 0 {
		t.Fatal("the cross-signature reuses the CA certificate's serial")
	}
	if CAFingerprint(k) != trust.Pin(ca) {
		t.Fatalf("CAFingerprint = %q; want the new CA's pin", CAFingerprint(k))
	}
}

// TestRefresh: Refresh reloads only when the stored keys changed, takes
// the epoch they were read at, and ignores keys read at an older epoch
// than the one in use (a slow read that lost a race).
func TestRefresh(t *testing.T) {
	s := testSealer(t, 7)
	keys, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow), Epoch: 3}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	epoch := uint64(3)
	fetch := func() ([]store.CAKey, uint64, error) { return keys, epoch, nil }
	if changed, err := a.Refresh(fetch); err != nil || changed || a.Generation() != 0 || a.Epoch() != 3 {
		t.Fatalf("Refresh with the same keys = %v, %v (generation %d, epoch %d); want no reload, epoch 3", changed, err, a.Generation(), a.Epoch())
	}
	k, err := a.NewCAKey(store.CertSSHUser, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	older := keys
	keys, epoch = append(keys, k), 4
	if changed, err := a.Refresh(fetch); err != nil || !changed || a.Generation() != 1 || len(a.SSHUserCAs()) != 2 || a.Epoch() != 4 {
		t.Fatalf("Refresh with a new key = %v, %v (generation %d, %d user CAs, epoch %d); want a reload trusting 2 at epoch 4", changed, err, a.Generation(), len(a.SSHUserCAs()), a.Epoch())
	}
	// Keys read at an older epoch are not put back.
	keys, epoch = older, 3
	if changed, err := a.Refresh(fetch); err != nil || changed || len(a.SSHUserCAs()) != 2 || a.Epoch() != 4 {
		t.Fatalf("Refresh with keys of an older epoch = %v, %v (%d user CAs, epoch %d); want them ignored", changed, err, len(a.SSHUserCAs()), a.Epoch())
	}
	// The same keys at a newer epoch: the epoch moves on in a new
	// generation (the bundle goes out again with its label), the keys stay.
	keys, epoch = append(older, k), 5
	if changed, err := a.Refresh(fetch); err != nil || !changed || a.Generation() != 2 || a.Epoch() != 5 || len(a.SSHUserCAs()) != 2 {
		t.Fatalf("Refresh with the same keys at a newer epoch = %v, %v (generation %d, epoch %d); want epoch 5 in generation 2", changed, err, a.Generation(), a.Epoch())
	}
}
