package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

func caPEM(cas ...*certs.Authority) string {
	var b strings.Builder
	for _, ca := range cas {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.X509CA().Raw}))
	}
	return b.String()
}

func caLines(keys ...ssh.PublicKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	}
	return out
}

// gatewayChain is the chain a gateway of ca presents.
func gatewayChain(t testing.TB, ca *certs.Authority) []*x509.Certificate {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueX509Server(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Gateway, Name: "gw"},
		PublicKey: pub, TTL: time.Hour, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{leaf, ca.X509CA()}
}

// TestWithTrust: an agent takes a bundle that adds keys, and refuses one of
// another cluster, one without the CA of its own certificate or of its
// gateway's, and keys that do not parse; the same bundle again changes
// nothing.
func TestWithTrust(t *testing.T) {
	other := newCA(t, "other")
	oldCA, newCA := newCA(t, "prod"), newCA(t, "prod")
	a, _ := testAgent(t, oldCA, "gw:8443")
	id := a.identity()
	id.CAPEM, id.UserCAs, id.HostCAs = caPEM(oldCA), caLines(oldCA.SSHUserCA()), caLines(oldCA.SSHHostCA())
	gw := gatewayChain(t, oldCA)
	rotation := func() *wire.Trust {
		return &wire.Trust{Cluster: "prod", X509: caPEM(oldCA, newCA),
			SSHUserCAs: caLines(oldCA.SSHUserCA(), newCA.SSHUserCA()), SSHHostCAs: caLines(oldCA.SSHHostCA(), newCA.SSHHostCA())}
	}

	next, changed, err := id.withTrust(rotation(), gw)
	if err != nil || !changed {
		t.Fatalf("withTrust(the rotation's bundle) = %v, changed %t; want it taken", err, changed)
	}
	if next.CAPEM != caPEM(oldCA, newCA) || len(next.UserCAs) != 2 || len(next.HostCAs) != 2 ||
		next.CertPEM != id.CertPEM || next.Pin != id.Pin || next.Name != id.Name {
		t.Fatalf("withTrust changed more or less than the trusted keys: %+v", next)
	}
	if again, changed, err := next.withTrust(rotation(), gw); err != nil || changed || again != next {
		t.Fatalf("withTrust(the same bundle again) = %v, changed %t; want nothing changed", err, changed)
	}
	// A gateway of the new CA, once the agent trusts it.
	if _, _, err := next.withTrust(rotation(), gatewayChain(t, newCA)); err != nil {
		t.Fatalf("withTrust from a gateway of the new CA: %v", err)
	}

	for _, tt := range []struct {
		name   string
		change func(*wire.Trust)
		gw     []*x509.Certificate
		want   string
	}{
		{"another cluster", func(b *wire.Trust) { b.Cluster = "staging" }, gw, "is for cluster"},
		{"without the agent's CA", func(b *wire.Trust) { b.X509 = caPEM(newCA) }, gw, "signed this agent's certificate"},
		{"without the gateway's CA", func(b *wire.Trust) { b.X509 = caPEM(oldCA) }, gatewayChain(t, newCA), "the gateway's certificate"},
		{"an SSH key that does not parse", func(b *wire.Trust) { b.SSHUserCAs = []string{"ssh-ed25519 AAAA"} }, gw, "SSH user CA"},
		{"not PEM certificates", func(b *wire.Trust) { b.X509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" }, gw, "X.509 CAs"},
		{"no host CA", func(b *wire.Trust) { b.SSHHostCAs = nil }, gw, "SSH host CAs"},
	} {
		b := rotation()
		tt.change(b)
		// next trusts both: it anchors a gateway of either CA.
		if got, _, err := next.withTrust(b, tt.gw); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: withTrust = %+v, %v; want a refusal saying %q", tt.name, got, err, tt.want)
		}
	}
	// A gateway whose certificate is not of the cluster's CA (an
	// operator's --tls-cert) is no reason to refuse.
	if _, _, err := id.withTrust(rotation(), gatewayChain(t, other)); err != nil {
		t.Errorf("withTrust from a gateway with an operator's certificate: %v", err)
	}
}

// TestWithTrustEpochs: a bundle older than the one in force (a lower CA
// epoch: a gateway that answered before it reloaded a rotation's step) is
// refused as stale and changes nothing, even when it would be valid; the
// same keys under a newer epoch are taken (the epoch moves on).
func TestWithTrustEpochs(t *testing.T) {
	oldCA, newCA := newCA(t, "prod"), newCA(t, "prod")
	a, _ := testAgent(t, oldCA, "gw:8443")
	id := a.identity()
	id.CAPEM, id.UserCAs, id.HostCAs = caPEM(oldCA), caLines(oldCA.SSHUserCA()), caLines(oldCA.SSHHostCA())
	gw := gatewayChain(t, oldCA)
	started := &wire.Trust{Cluster: "prod", X509: caPEM(oldCA, newCA), Epoch: 1,
		SSHUserCAs: caLines(oldCA.SSHUserCA(), newCA.SSHUserCA()), SSHHostCAs: caLines(oldCA.SSHHostCA(), newCA.SSHHostCA())}
	next, changed, err := id.withTrust(started, gw)
	if err != nil || !changed || next.TrustEpoch != 1 {
		t.Fatalf("withTrust(epoch 1) = %v, changed %t; want it taken at epoch 1", err, changed)
	}
	// The bundle before the start (epoch 0), pushed late: refused.
	before := &wire.Trust{Cluster: "prod", X509: caPEM(oldCA), SSHUserCAs: caLines(oldCA.SSHUserCA()), SSHHostCAs: caLines(oldCA.SSHHostCA())}
	var stale *staleTrustError
	if got, changed, err := next.withTrust(before, gw); !errors.As(err, &stale) || changed || got != nil {
		t.Fatalf("withTrust(an older bundle) = %+v, changed %t, %v; want it refused as stale", got, changed, err)
	}
	if next.CAPEM != caPEM(oldCA, newCA) || next.TrustEpoch != 1 {
		t.Fatal("a stale bundle changed the identity")
	}
	// The same keys under a newer epoch.
	later := *started
	later.Epoch = 2
	if got, changed, err := next.withTrust(&later, gw); err != nil || !changed || got.TrustEpoch != 2 || got.CAPEM != next.CAPEM {
		t.Fatalf("withTrust(the same keys at epoch 2) = %v, changed %t; want the epoch moved on", err, changed)
	}
}

// TestWithTrustMovesThePin: the bundle of a rotation's activate (the new
// CA signs) moves the agent's pin to the new CA and keeps the old one as
// a former pin, which --ca-pin may still give; a bundle signed by the
// CA already pinned moves nothing.
func TestWithTrustMovesThePin(t *testing.T) {
	oldCA, newCA, otherCA := newCA(t, "prod"), newCA(t, "prod"), newCA(t, "prod")
	a, _ := testAgent(t, oldCA, "gw:8443")
	id := a.identity()
	id.CAPEM, id.UserCAs, id.HostCAs = caPEM(oldCA), caLines(oldCA.SSHUserCA()), caLines(oldCA.SSHHostCA())
	gw := gatewayChain(t, oldCA)
	bundle := func(pin string, epoch uint64) *wire.Trust {
		return &wire.Trust{Cluster: "prod", X509: caPEM(newCA, oldCA), Pin: pin, Epoch: epoch,
			SSHUserCAs: caLines(newCA.SSHUserCA(), oldCA.SSHUserCA()), SSHHostCAs: caLines(newCA.SSHHostCA(), oldCA.SSHHostCA())}
	}
	started, _, err := id.withTrust(bundle(oldCA.Pin(), 1), gw)
	if err != nil || started.Pin != oldCA.Pin() || len(started.FormerPins) != 0 {
		t.Fatalf("start's bundle: %v, pin %s; want the old pin kept", err, started.Pin)
	}
	activated, changed, err := started.withTrust(bundle(newCA.Pin(), 2), gw)
	if err != nil || !changed || activated.Pin != newCA.Pin() || !slices.Equal(activated.FormerPins, []string{oldCA.Pin()}) {
		t.Fatalf("activate's bundle: %v, changed %t, pin %s, former %v; want the new CA's pin and the old one kept", err, changed, activated.Pin, activated.FormerPins)
	}
	upper := "sha256:" + strings.ToUpper(strings.TrimPrefix(oldCA.Pin(), "sha256:"))
	if !activated.knowsPin(upper) || !activated.knowsPin(newCA.Pin()) || activated.knowsPin(otherCA.Pin()) {
		t.Fatal("knowsPin does not accept the enrolment pin (any case) and the current one after the move, or accepts another")
	}
	if again, changed, err := activated.withTrust(bundle(newCA.Pin(), 2), gw); err != nil || changed || again != activated {
		t.Fatalf("the same bundle again: %v, changed %t; want nothing changed", err, changed)
	}
}
