package trust_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/trust"
)

var now = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

type keyPair struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKey(t *testing.T) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{pub, priv}
}

var serial int64

// sign makes a certificate for key from tmpl, signed by parent (self-signed
// when parent is nil).
func sign(t *testing.T, tmpl *x509.Certificate, key keyPair, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	if parent == nil {
		parent, parentKey = tmpl, key.priv
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.pub, parentKey)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caTemplate(name string) *x509.Certificate {
	return &x509.Certificate{
		Subject:   pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}
}

func leafTemplate(dns ...string) *x509.Certificate {
	return &x509.Certificate{
		Subject:   pkix.Name{CommonName: "gateway"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
}

func raw(certs ...*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

func TestPin(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	a := sign(t, caTemplate("a"), k1, nil, nil)
	aAgain := sign(t, caTemplate("a, re-issued"), k1, nil, nil)
	b := sign(t, caTemplate("b"), k2, nil, nil)

	sum := sha256.Sum256(a.RawSubjectPublicKeyInfo)
	if got, want := trust.Pin(a), "sha256:"+hex.EncodeToString(sum[:]); got != want {
		t.Errorf("got pin %s; want %s", got, want)
	}
	if trust.Pin(a) != trust.Pin(aAgain) {
		t.Errorf("re-issuing the CA with the same key changed its pin")
	}
	if trust.Pin(a) == trust.Pin(b) {
		t.Errorf("two keys share pin %s", trust.Pin(a))
	}
	if !trust.MatchPin(a, trust.Pin(aAgain)) || trust.MatchPin(a, trust.Pin(b)) {
		t.Errorf("MatchPin disagrees with Pin")
	}
	if p, err := trust.ParsePin(trust.Pin(a)); err != nil || p != trust.Pin(a) {
		t.Errorf("ParsePin(Pin(a)) = %q, %v; want %q", p, err, trust.Pin(a))
	}
}

func TestParsePin(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in, want string // want "" means refused
	}{
		{"sha256:" + hex64, "sha256:" + hex64},
		{"sha256:" + strings.ToUpper(hex64), "sha256:" + hex64},
		{"  sha256:" + hex64 + "\n", "sha256:" + hex64},
		{hex64, ""},
		{"sha1:" + hex64, ""},
		{"sha256:", ""},
		{"sha256:" + hex64[:62], ""},
		{"sha256:" + hex64 + "00", ""},
		{"sha256:" + hex64[:63] + "g", ""},
		{"sha256:" + hex64[:63], ""},
		{"sha256: " + hex64, ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, err := trust.ParsePin(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParsePin(%q) = %q; want an error", tc.in, got)
			} else if !strings.Contains(err.Error(), "sha256:") {
				t.Errorf("ParsePin(%q) error %q does not say what a pin looks like", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestVerifyPinned(t *testing.T) {
	caKey, otherKey, interKey, leafKey := newKey(t), newKey(t), newKey(t), newKey(t)
	ca := sign(t, caTemplate("cluster CA"), caKey, nil, nil)
	other := sign(t, caTemplate("other CA"), otherKey, nil, nil)
	inter := sign(t, caTemplate("intermediate"), interKey, ca, caKey.priv)
	leaf := sign(t, leafTemplate("gw.example.com"), leafKey, ca, caKey.priv)
	leafViaInter := sign(t, leafTemplate("gw.example.com"), leafKey, inter, interKey.priv)
	otherLeaf := sign(t, leafTemplate("gw.example.com"), leafKey, other, otherKey.priv)
	expiredTmpl := leafTemplate("gw.example.com")
	expiredTmpl.NotBefore, expiredTmpl.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour)
	expired := sign(t, expiredTmpl, leafKey, ca, caKey.priv)
	clientTmpl := leafTemplate("gw.example.com")
	clientTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	clientOnly := sign(t, clientTmpl, leafKey, ca, caKey.priv)

	pin := trust.Pin(ca)
	tests := []struct {
		name       string
		chain      [][]byte
		pin        string
		serverName string
		at         time.Time
		wantCA     *x509.Certificate // nil: refused
		mismatch   bool              // refused with ErrPinMismatch
	}{
		{name: "right pin", chain: raw(leaf, ca), pin: pin, serverName: "gw.example.com", wantCA: ca},
		{name: "right pin, IP address", chain: raw(leaf, ca), pin: pin, serverName: "127.0.0.1", wantCA: ca},
		{name: "via an intermediate", chain: raw(leafViaInter, inter, ca), pin: pin, serverName: "gw.example.com", wantCA: ca},
		{name: "pin of the intermediate", chain: raw(leafViaInter, inter), pin: trust.Pin(inter), serverName: "gw.example.com", wantCA: inter},
		{name: "wrong pin", chain: raw(leaf, ca), pin: trust.Pin(other), serverName: "gw.example.com", mismatch: true},
		{name: "chain without the CA", chain: raw(leaf), pin: pin, serverName: "gw.example.com", mismatch: true},
		{name: "no certificate", chain: nil, pin: pin, serverName: "gw.example.com", mismatch: true},
		{name: "wrong host name", chain: raw(leaf, ca), pin: pin, serverName: "evil.example.com"},
		{name: "empty host name matches nothing", chain: raw(leaf, ca), pin: pin, serverName: "gw.example.com.evil"},
		{name: "expired", chain: raw(expired, ca), pin: pin, serverName: "gw.example.com"},
		{name: "not yet valid", chain: raw(leaf, ca), pin: pin, serverName: "gw.example.com", at: now.Add(-2 * time.Minute)},
		{name: "after the leaf's end", chain: raw(leaf, ca), pin: pin, serverName: "gw.example.com", at: now.Add(2 * time.Hour)},
		{name: "leaf of another CA beside the pinned CA", chain: raw(otherLeaf, ca), pin: pin, serverName: "gw.example.com"},
		{name: "the CA certificate alone", chain: raw(ca), pin: pin, serverName: "gw.example.com"},
		{name: "client-only certificate", chain: raw(clientOnly, ca), pin: pin, serverName: "gw.example.com"},
		{name: "garbage", chain: [][]byte{[]byte("not a certificate"), ca.Raw}, pin: pin, serverName: "gw.example.com"},
	}
	// The same answers from a ChainCache that already accepted every
	// chain of the table at now, with the pin and name that made it pass:
	// a remembered chain must not pass under another pin, name or time.
	cache := trust.NewChainCache(64)
	for _, tc := range tests {
		if tc.wantCA != nil && tc.at.IsZero() {
			if _, err := cache.VerifyPinned(tc.chain, tc.pin, tc.serverName, now); err != nil {
				t.Fatalf("%s: priming the cache: %v", tc.name, err)
			}
		}
	}
	if cache.Len() == 0 {
		t.Fatal("the cache remembers no chain")
	}
	verifiers := []struct {
		name   string
		verify func([][]byte, string, string, time.Time) (*x509.Certificate, error)
	}{
		{"VerifyPinned", trust.VerifyPinned},
		{"ChainCache", cache.VerifyPinned},
	}
	for _, v := range verifiers {
		for _, tc := range tests {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				at := tc.at
				if at.IsZero() {
					at = now
				}
				checkPinned(t, tc.wantCA, tc.mismatch)(v.verify(tc.chain, tc.pin, tc.serverName, at))
			})
		}
	}
}

// checkPinned checks one VerifyPinned answer: wantCA, or a refusal (with
// ErrPinMismatch if mismatch) when wantCA is nil.
func checkPinned(t *testing.T, wantCA *x509.Certificate, mismatch bool) func(*x509.Certificate, error) {
	return func(got *x509.Certificate, err error) {
		t.Helper()
		if wantCA != nil {
			if err != nil {
				t.Fatalf("got error %v; want success", err)
			}
			if !got.Equal(wantCA) {
				t.Errorf("got CA %q; want %q", got.Subject.CommonName, wantCA.Subject.CommonName)
			}
			return
		}
		if err == nil {
			t.Fatalf("got CA %q, no error; want refused", got.Subject.CommonName)
		}
		if got != nil {
			t.Errorf("got CA %q along with error %v; want none", got.Subject.CommonName, err)
		}
		if errors.Is(err, trust.ErrPinMismatch) != mismatch {
			t.Errorf("got error %v; want ErrPinMismatch: %v", err, mismatch)
		}
	}
}

// TestPinnedClientConfig runs real TLS handshakes against a server with a
// chain to the cluster CA.
func TestPinnedClientConfig(t *testing.T) {
	caKey, otherKey, leafKey := newKey(t), newKey(t), newKey(t)
	ca := sign(t, caTemplate("cluster CA"), caKey, nil, nil)
	other := sign(t, caTemplate("other CA"), otherKey, nil, nil)
	leaf := sign(t, leafTemplate("gw.example.com"), leafKey, ca, caKey.priv)
	serverCert := &tls.Certificate{Certificate: raw(leaf, ca), PrivateKey: leafKey.priv, Leaf: leaf}

	tests := []struct {
		name       string
		pin        string
		serverName string
		at         time.Time
		maxVersion uint16 // of the server
		ok         bool
	}{
		{name: "right pin", pin: trust.Pin(ca), serverName: "gw.example.com", at: now, ok: true},
		{name: "wrong pin", pin: trust.Pin(other), serverName: "gw.example.com", at: now},
		{name: "wrong name", pin: trust.Pin(ca), serverName: "other.example.com", at: now},
		{name: "client clock after expiry", pin: trust.Pin(ca), serverName: "gw.example.com", at: now.Add(2 * time.Hour)},
		{name: "server offers only TLS 1.2", pin: trust.Pin(ca), serverName: "gw.example.com", at: now, maxVersion: tls.VersionTLS12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scfg := trust.ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serverCert, nil })
			if tc.maxVersion != 0 {
				scfg.MinVersion, scfg.MaxVersion = tls.VersionTLS12, tc.maxVersion
			}
			ccfg := trust.PinnedClientConfig(tc.pin, tc.serverName, func() time.Time { return tc.at })
			c1, c2 := net.Pipe()
			srv, cli := tls.Server(c1, scfg), tls.Client(c2, ccfg)
			done := make(chan error, 1)
			go func() {
				err := srv.Handshake()
				c1.Close() // not srv.Close: a close_notify would block on the pipe
				done <- err
			}()
			err := cli.Handshake()
			c2.Close()
			<-done
			if got := err == nil; got != tc.ok {
				t.Errorf("got handshake error %v; want success %v", err, tc.ok)
			}
			if tc.ok {
				if v := cli.ConnectionState().Version; v != tls.VersionTLS13 {
					t.Errorf("got version %x; want TLS 1.3", v)
				}
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	cfg := trust.ServerConfig(nil)
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("got MinVersion %x; want TLS 1.3", cfg.MinVersion)
	}
	if cfg.ClientAuth != tls.RequestClientCert {
		t.Errorf("got ClientAuth %v; want RequestClientCert", cfg.ClientAuth)
	}
	if c := trust.PinnedClientConfig("sha256:00", "x", nil); c.MinVersion != tls.VersionTLS13 || c.VerifyConnection == nil {
		t.Errorf("client config: MinVersion %x, VerifyConnection set %v; want TLS 1.3 and set", c.MinVersion, c.VerifyConnection != nil)
	}
}

func FuzzParsePin(f *testing.F) {
	for _, s := range []string{
		"sha256:" + strings.Repeat("ab", 32), "SHA256:" + strings.Repeat("AB", 32), " sha256:" + strings.Repeat("0", 64) + " ",
		"sha256:", "", "sha256:zz", "sha256:" + strings.Repeat("é", 32),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := trust.ParsePin(s)
		if err != nil {
			if p != "" {
				t.Fatalf("ParsePin(%q) = %q with error %v; want empty", s, p, err)
			}
			return
		}
		if len(p) != len("sha256:")+64 || !strings.HasPrefix(p, "sha256:") || strings.ToLower(p) != p {
			t.Fatalf("ParsePin(%q) = %q; not a canonical pin", s, p)
		}
		if _, err := hex.DecodeString(strings.TrimPrefix(p, "sha256:")); err != nil {
			t.Fatalf("ParsePin(%q) = %q; not hex: %v", s, p, err)
		}
		again, err := trust.ParsePin(p)
		if err != nil || again != p {
			t.Fatalf("ParsePin(ParsePin(%q)) = %q, %v; want %q", s, again, err, p)
		}
		if !strings.EqualFold(strings.TrimSpace(s), p) {
			t.Fatalf("ParsePin(%q) = %q; want the input up to case and surrounding space", s, p)
		}
	})
}
