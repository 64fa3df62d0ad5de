package doctor

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// testCA is a cluster CA made for one test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial int64

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
}

// leaf issues a server certificate for 127.0.0.1 (and names) valid for
// life from now, with key (nil: a new ECDSA P-256 key). Its lifetime is at
// least 90 days, as an operator's: one expiring soon is near its end.
func (ca *testCA) leaf(t testing.TB, life time.Duration, key crypto.Signer, names ...string) tls.Certificate {
	t.Helper()
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: time.Now().Add(min(-time.Hour, life-90*24*time.Hour)), NotAfter: time.Now().Add(life),
		DNSNames: names, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// startAPI starts an HTTPS server answering /v1/ca like a gateway, with
// conf's versions and suites and cert; it returns HOST:PORT.
func startAPI(t testing.TB, ca *testCA, cert tls.Certificate, conf *tls.Config) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathCA, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(api.CA{Cluster: "test", X509: ca.pem()})
	})
	s := httptest.NewUnstartedServer(mux)
	conf.Certificates = []tls.Certificate{cert}
	s.TLS = conf
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the probes' refused handshakes
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// tls13 is the gateway's own server configuration.
func tls13() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS13} }

// startQUIC starts a QUIC listener configured as the gateway's (TLS 1.3,
// the tunnel ALPN, a client certificate required) that accepts nothing
// but handshakes; it returns its UDP address.
func startQUIC(t testing.TB, cert tls.Certificate) string {
	t.Helper()
	conf := transport.ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			_ = c.CloseWithError(0, "")
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		tr.Close() // waits for the transport's goroutines
		udp.Close()
	})
	return ln.Addr().String()
}

// bigBuffers is a sysctl reader with buffers large enough for QUIC.
func bigBuffers(string) (int, error) { return 8 << 20, nil }

// baseConfig examines api and quic with ca as the cluster CA.
func baseConfig(apiAddr, quicAddr string, ca *testCA) Config {
	return Config{API: apiAddr, QUIC: quicAddr, CA: []*x509.Certificate{ca.cert}, TrustSource: "the test",
		Timeout: 20 * time.Second, Sysctl: bigBuffers}
}

func run(t testing.TB, cfg Config) Report {
	t.Helper()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// find returns the findings whose ID is id.
func find(rep Report, id string) []Finding {
	var out []Finding
	for _, f := range rep.Findings {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

// want checks that exactly one finding has id, with severity sev and a
// What containing text; it returns it.
func want(t testing.TB, rep Report, id string, sev Severity, text string) Finding {
	t.Helper()
	fs := find(rep, id)
	if len(fs) != 1 {
		t.Fatalf("findings with id %s: %d; want 1\n%s", id, len(fs), dump(rep))
	}
	f := fs[0]
	if f.Severity != sev || !strings.Contains(f.What, text) {
		t.Fatalf("finding %s = %s %q; want %s containing %q\n%s", id, f.Severity, f.What, sev, text, dump(rep))
	}
	if (sev == Warn || sev == Fail) && f.Fix == "" {
		t.Errorf("finding %s has no Fix", id)
	}
	return f
}

func dump(rep Report) string {
	b, _ := json.MarshalIndent(rep, "", "  ")
	return string(b)
}

func ids(rep Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, f.ID)
	}
	return out
}

func hasPrefix(rep Report, p string) bool {
	return slices.ContainsFunc(ids(rep), func(id string) bool { return strings.HasPrefix(id, p) })
}

var _ = errors.New
