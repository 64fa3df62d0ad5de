package integration

import (
	"context"
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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
)

// doctorReport is the part of `tunnel doctor --json` the tests read.
type doctorReport struct {
	Schema   int    `json:"schema"`
	Gateway  string `json:"gateway"`
	Grade    string `json:"grade"`
	CAPin    string `json:"ca_pin"`
	Findings []struct {
		Check    string `json:"check"`
		ID       string `json:"id"`
		Severity string `json:"severity"`
		Scope    string `json:"scope"`
		Cap      string `json:"cap"`
		What     string `json:"what"`
		Fix      string `json:"fix"`
	} `json:"findings"`
}

func parseDoctor(t *testing.T, out string) doctorReport {
	t.Helper()
	var rep doctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("tunnel doctor --json printed something that is not JSON: %v\n%s", err, out)
	}
	return rep
}

func (r doctorReport) severity(id string) string {
	for _, f := range r.Findings {
		if f.ID == id {
			return f.Severity
		}
	}
	return ""
}

// TestDoctorGradesTheRealGatewayA runs the real `tunnel doctor` against a
// real gateway with its jump host: logged in as an admin (the CA from the
// profile, the SSH address from the gateway list) and without any login
// (--ca-pin, --ssh).
func TestDoctorGradesTheRealGatewayA(t *testing.T) {
	c := startCluster(t, "--ssh-addr", "127.0.0.1:0")
	admin := c.adminUser()
	admin.login()

	out := admin.must("doctor", "--min-grade", "A")
	if !strings.HasPrefix(out, "grade A  "+c.addr) {
		t.Fatalf("tunnel doctor printed\n%s\nwant a first line starting %q", out, "grade A  "+c.addr)
	}
	for _, line := range []string{
		"OK    trust  verifying against the cluster CA from the profile",
		"OK    api    only TLS 1.3 is offered",
		"OK    api    the certificate chain verifies to the cluster CA",
		"OK    quic   QUIC on " + c.addr + " answers",
		"OK    ssh    strict key exchange is offered",
		"OK    clock  the clocks agree within 30s",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("tunnel doctor output has no line %q:\n%s", line, out)
		}
	}

	rep := parseDoctor(t, admin.must("doctor", "--json"))
	if rep.Schema != 1 || rep.Grade != "A" || rep.Gateway != c.addr || rep.CAPin != c.pin {
		t.Errorf("doctor --json: schema %d grade %q gateway %q pin %q; want 1, A, %s, %s", rep.Schema, rep.Grade, rep.Gateway, rep.CAPin, c.addr, c.pin)
	}
	for _, id := range []string{"ssh.ciphers", "ssh.macs", "ssh.kex", "ssh.hostkey", "ssh.strict_kex", "cert.expiry", "quic.reachable"} {
		if s := rep.severity(id); s != "ok" {
			t.Errorf("finding %s: severity %q; want ok", id, s)
		}
	}

	// Without a login: from the outside, with the pin tunnel-gateway init
	// printed.
	anon := c.newUserHandle("nobody", "x", nil)
	rep = parseDoctor(t, anon.must("doctor", "--json", "--gateway", c.addr, "--ca-pin", c.pin, "--ssh", c.sshAddr))
	if rep.Grade != "A" || rep.severity("trust.ca") != "ok" || rep.severity("ssh.strict_kex") != "ok" {
		t.Errorf("doctor without login: grade %q, trust %q, strict kex %q; want A, ok, ok", rep.Grade, rep.severity("trust.ca"), rep.severity("ssh.strict_kex"))
	}
	// The wrong pin: not the cluster's gateway, F and exit status 1.
	so, se, err := anon.run("doctor", "--gateway", c.addr, "--ca-pin", "sha256:"+strings.Repeat("ab", 32))
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.HasPrefix(so, "grade F") ||
		!strings.Contains(so, "the CA the gateway sends does not match --ca-pin") || !strings.Contains(se, "grade F is below --min-grade B") {
		t.Errorf("doctor with a wrong pin: err %v\nstdout: %s\nstderr: %s", err, so, se)
	}
}

// TestDoctorWeakenedEndpoint runs the real `tunnel doctor` against an API
// that allows TLS 1.2 with a CBC suite and serves a certificate expiring
// in two days: a low grade, exit status 1, and the findings say why.
func TestDoctorWeakenedEndpoint(t *testing.T) {
	caCert, caKey := doctorCA(t)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "weak"},
		NotBefore: time.Now().Add(-88 * 24 * time.Hour), NotAfter: time.Now().Add(2 * 24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"cluster": "weak", "x509_pem": string(caPEM)})
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA},
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caCert.Raw}, PrivateKey: leafKey}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	// A QUIC port set up like the gateway's, so that the QUIC check answers
	// at once instead of timing out.
	cert := tls.Certificate{Certificate: [][]byte{leafDER, caCert.Raw}, PrivateKey: leafKey}
	qln, err := quic.ListenAddr("127.0.0.1:0", transport.ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }), nil)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := qln.Accept(context.Background())
			if err != nil {
				return
			}
			_ = c.CloseWithError(0, "")
		}
	}()
	defer func() {
		qln.Close()
		<-accepted
	}()
	quicAddr := qln.Addr().String()

	u := &user{c: &cluster{t: t}, home: t.TempDir()}
	so, se, err := u.run("doctor", "--gateway", addr, "--ca", caFile, "--quic", quicAddr)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("doctor against a weakened endpoint: %v; want exit status 1\nstdout: %s\nstderr: %s", err, so, se)
	}
	if !strings.HasPrefix(so, "grade D  "+addr) || !strings.Contains(se, "tunnel: grade D is below --min-grade B: fix the findings above") {
		t.Errorf("stdout:\n%s\nstderr: %s\nwant grade D below B", so, se)
	}
	for _, line := range []string{
		"WARN  api    TLS 1.3 is not offered",
		"WARN  api    TLS 1.2 is offered (only a TLS 1.3-only endpoint gets an A): serve TLS 1.3 only",
		"FAIL  api    cipher suite TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA is accepted (TLS 1.2): CBC mode (padding oracles, Lucky13): accept only ECDHE suites",
		"FAIL  api    the certificate expires in 4", // 47h59m...
		"OK    api    the certificate chain verifies to the cluster CA",
		"OK    quic   QUIC on " + quicAddr + " answers",
	} {
		if !strings.Contains(so, line) {
			t.Errorf("output has no line %q:\n%s", line, so)
		}
	}
	// --min-grade F accepts it; --json still parses.
	out, se, err := u.run("doctor", "--gateway", addr, "--ca", caFile, "--quic", quicAddr, "--min-grade", "F", "--json")
	if err != nil {
		t.Fatalf("--min-grade F: %v\n%s", err, se)
	}
	if rep := parseDoctor(t, out); rep.Grade != "D" || rep.severity("tls.suite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA") != "fail" || rep.severity("cert.expiry") != "fail" {
		t.Errorf("--json: grade %q, CBC %q, expiry %q; want D, fail, fail", rep.Grade, rep.severity("tls.suite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"), rep.severity("cert.expiry"))
	}
}

func doctorCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weak CA"},
		NotBefore: time.Now().Add(-100 * 24 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}
