package wire_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

const (
	testPEM     = "-----BEGIN CERTIFICATE-----\nMIIBfTCCAS+gAwIBAgIQ\n-----END CERTIFICATE-----\n"
	testUserCA  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8tYw6Yd3nQnV0aBQ4Oj8D2x9Qm8gZyU2sF3m3XQ1bA"
	testHostCA  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4qk5rW1aY0QxR3s0sXk0bX0c0w9xJ1kz3JQ2u3h2nK"
	testTrustPn = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// goldenTrust is a bundle as a gateway sends it during a rotation: two
// keys of each kind.
func goldenTrust() *wire.Trust {
	return &wire.Trust{Cluster: "prod", X509: testPEM + testPEM, SSHUserCAs: []string{testUserCA, testUserCA + " new"},
		SSHHostCAs: []string{testHostCA, testHostCA + " new"}, Pin: testTrustPn}
}

// TestTrustCheck: Check accepts a bundle as sent, and refuses every part
// missing, out of its limits or not text.
func TestTrustCheck(t *testing.T) {
	if err := goldenTrust().Check(); err != nil {
		t.Fatalf("Check(golden bundle) = %v", err)
	}
	many := func(s string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	full := goldenTrust()
	full.X509 = strings.Repeat(testPEM, wire.MaxTrustCAs)
	full.SSHUserCAs = many(testUserCA, wire.MaxTrustCAs)
	full.SSHHostCAs = many("ssh-ed25519 "+strings.Repeat("A", wire.MaxTrustKeyLine-12), wire.MaxTrustCAs)
	if err := full.Check(); err != nil {
		t.Fatalf("Check(bundle at every limit) = %v", err)
	}
	// The largest bundle Check accepts fits in one control message.
	var buf bytes.Buffer
	big := goldenTrust()
	big.X509 = testPEM + strings.Repeat("A", wire.MaxTrustX509-len(testPEM))
	big.SSHUserCAs = many(strings.Repeat("u", wire.MaxTrustKeyLine), wire.MaxTrustCAs)
	big.SSHHostCAs = big.SSHUserCAs
	if err := big.Check(); err != nil {
		t.Fatalf("Check(largest bundle) = %v", err)
	}
	if err := wire.WriteControl(&buf, wire.Control{Type: wire.MsgTrust, Trust: big}); err != nil {
		t.Fatalf("the largest bundle Check accepts does not fit in a control message: %v", err)
	}

	for _, tt := range []struct {
		name   string
		change func(*wire.Trust)
	}{
		{"no cluster", func(b *wire.Trust) { b.Cluster = "" }},
		{"cluster too long", func(b *wire.Trust) { b.Cluster = strings.Repeat("c", 256) }},
		{"cluster not UTF-8", func(b *wire.Trust) { b.Cluster = "\xff" }},
		{"pin too long", func(b *wire.Trust) { b.Pin = strings.Repeat("p", 256) }},
		{"no X.509 CA", func(b *wire.Trust) { b.X509 = "" }},
		{"X.509 not PEM", func(b *wire.Trust) { b.X509 = "MIIB" }},
		{"X.509 too long", func(b *wire.Trust) { b.X509 = testPEM + strings.Repeat("A", wire.MaxTrustX509) }},
		{"X.509 not UTF-8", func(b *wire.Trust) { b.X509 = testPEM + "\xc3" }},
		{"too many X.509 CAs", func(b *wire.Trust) { b.X509 = strings.Repeat(testPEM, wire.MaxTrustCAs+1) }},
		{"no user CA", func(b *wire.Trust) { b.SSHUserCAs = nil }},
		{"no host CA", func(b *wire.Trust) { b.SSHHostCAs = []string{} }},
		{"too many user CAs", func(b *wire.Trust) { b.SSHUserCAs = many(testUserCA, wire.MaxTrustCAs+1) }},
		{"too many host CAs", func(b *wire.Trust) { b.SSHHostCAs = many(testHostCA, wire.MaxTrustCAs+1) }},
		{"empty user CA", func(b *wire.Trust) { b.SSHUserCAs = []string{""} }},
		{"user CA line too long", func(b *wire.Trust) { b.SSHUserCAs = []string{strings.Repeat("k", wire.MaxTrustKeyLine+1)} }},
		{"two keys in one line", func(b *wire.Trust) { b.SSHHostCAs = []string{testHostCA + "\n" + testHostCA} }},
		{"host CA not UTF-8", func(b *wire.Trust) { b.SSHHostCAs = []string{"ssh-ed25519 \xff"} }},
	} {
		b := goldenTrust()
		tt.change(b)
		if err := b.Check(); err == nil {
			t.Errorf("%s: Check = nil; want a refusal", tt.name)
		}
	}
	var none *wire.Trust
	if err := none.Check(); err == nil {
		t.Errorf("Check(nil) = nil; want a refusal")
	}
}

// FuzzTrust feeds the agent's reading of a trust message hostile bytes:
// ParseControl, then Check. What Check accepts is within the limits and
// survives a trip through the encoder.
func FuzzTrust(f *testing.F) {
	f.Add(encodeControl(f, wire.Control{Type: wire.MsgTrust, Trust: goldenTrust()})[4:])
	f.Add([]byte(`{"type":"trust","trust":{"cluster":"c","x509_pem":"-----BEGIN CERTIFICATE-----","ssh_user_cas":["a"],"ssh_host_cas":["b"]}}`))
	f.Add([]byte(`{"type":"trust","trust":null}`))
	f.Add([]byte(`{"type":"trust","trust":{"ssh_user_cas":[""],"ssh_host_cas":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.ParseControl(b)
		if err != nil {
			return
		}
		if err := m.Trust.Check(); err != nil {
			return
		}
		tr := m.Trust
		if tr.Cluster == "" || len(tr.X509) > wire.MaxTrustX509 ||
			len(tr.SSHUserCAs) == 0 || len(tr.SSHUserCAs) > wire.MaxTrustCAs ||
			len(tr.SSHHostCAs) == 0 || len(tr.SSHHostCAs) > wire.MaxTrustCAs {
			t.Fatalf("Check accepted a bundle out of its limits: %+v", tr)
		}
		for _, l := range append(append([]string(nil), tr.SSHUserCAs...), tr.SSHHostCAs...) {
			if l == "" || len(l) > wire.MaxTrustKeyLine || strings.ContainsAny(l, "\r\n") {
				t.Fatalf("Check accepted an SSH CA line %q", l)
			}
		}
		var buf bytes.Buffer
		if err := wire.WriteControl(&buf, m); err != nil {
			if len(b) <= wire.MaxControlSize/6 {
				t.Fatalf("WriteControl(an accepted trust message) = %v", err)
			}
			return
		}
		again, err := wire.ReadControl(&buf)
		if err != nil {
			t.Fatalf("ReadControl(WriteControl(an accepted trust message)) = %v", err)
		}
		if diff := cmp.Diff(m, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("trust message changed through the encoder (-first +again):\n%s", diff)
		}
		if err := again.Trust.Check(); err != nil {
			t.Fatalf("a bundle Check accepted is refused after the encoder: %v", err)
		}
	})
}
