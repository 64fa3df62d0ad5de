package agent

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// FuzzWithTrust: a trust message as it comes off a gateway's control
// stream (wire.ParseControl, then withTrust) never panics, and a bundle
// withTrust takes keeps the CA that signed the agent's own certificate and
// the gateway's chain anchored, and holds exactly the bundle's keys; one it
// refuses leaves the identity as it was.
func FuzzWithTrust(f *testing.F) {
	oldCA, newCA := newCA(f, "prod"), newCA(f, "prod")
	a, _ := testAgent(f, oldCA, "gw:8443")
	id := a.identity()
	id.CAPEM, id.UserCAs, id.HostCAs = caPEM(oldCA), caLines(oldCA.SSHUserCA()), caLines(oldCA.SSHHostCA())
	gw := gatewayChain(f, oldCA)
	seed := func(t wire.Trust) {
		b, err := json.Marshal(wire.Control{Type: wire.MsgTrust, Trust: &t})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(wire.Trust{Cluster: "prod", X509: caPEM(oldCA, newCA),
		SSHUserCAs: caLines(oldCA.SSHUserCA(), newCA.SSHUserCA()), SSHHostCAs: caLines(oldCA.SSHHostCA(), newCA.SSHHostCA())})
	seed(wire.Trust{Cluster: "prod", X509: caPEM(newCA), SSHUserCAs: caLines(newCA.SSHUserCA())})
	seed(wire.Trust{Cluster: "prod", X509: caPEM(newCA, oldCA), Pin: newCA.Pin(), Epoch: 2,
		SSHUserCAs: caLines(newCA.SSHUserCA(), oldCA.SSHUserCA()), SSHHostCAs: caLines(newCA.SSHHostCA(), oldCA.SSHHostCA())})
	seed(wire.Trust{Cluster: "other", X509: caPEM(oldCA)})
	seed(wire.Trust{Cluster: "prod", X509: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})
	f.Add([]byte(`{"type":"trust","trust":{"cluster":"prod","x509_pem":"","ssh_user_cas":["ssh-ed25519 AAAA"]}}`))
	f.Add([]byte(`{"type":"trust"}`))

	before := *id
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := wire.ParseControl(body)
		if err != nil || m.Type != wire.MsgTrust || m.Trust == nil {
			return
		}
		next, changed, err := id.withTrust(m.Trust, gw)
		if id.CAPEM != before.CAPEM || !slices.Equal(id.UserCAs, before.UserCAs) || !slices.Equal(id.HostCAs, before.HostCAs) {
			t.Fatal("withTrust changed the identity it was called on")
		}
		if err != nil {
			if next != nil || changed {
				t.Fatalf("withTrust refused (%v) but returned an identity (changed %t)", err, changed)
			}
			return
		}
		if !changed {
			if next != id {
				t.Fatal("withTrust changed nothing but returned another identity")
			}
			return
		}
		if next.CAPEM != m.Trust.X509 || !slices.Equal(next.UserCAs, m.Trust.SSHUserCAs) || !slices.Equal(next.HostCAs, m.Trust.SSHHostCAs) {
			t.Fatalf("the identity taken does not hold the bundle's keys: %+v", next)
		}
		cas, err := parseCAPEM(next.CAPEM)
		if err != nil {
			t.Fatalf("a bundle taken has X.509 CAs that do not parse: %v", err)
		}
		if !anchored(gw, cas) {
			t.Fatal("a bundle taken no longer anchors the gateway's chain")
		}
		if next.CertPEM != id.CertPEM || string(next.KeyDER) != string(id.KeyDER) {
			t.Fatal("a bundle changed the agent's certificate or key")
		}
		// The pin moves only to a CA of the bundle, and the old one is kept.
		if next.Pin != id.Pin {
			pinned := false
			for _, c := range cas {
				pinned = pinned || trust.Pin(c) == next.Pin
			}
			if !pinned || len(next.FormerPins) == 0 || next.FormerPins[len(next.FormerPins)-1] != id.Pin {
				t.Fatalf("the pin moved to %s, not a CA of the bundle, or the old one was not kept: %v", next.Pin, next.FormerPins)
			}
		}
	})
}
