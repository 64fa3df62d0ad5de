package doctor

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestWellConfiguredGatewayGetsA(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(startAPI(t, ca, cert, tls13()), startQUIC(t, cert), ca)
	rep := run(t, cfg)
	if rep.Grade != A {
		t.Fatalf("grade %s; want A\n%s", rep.Grade, dump(rep))
	}
	want(t, rep, "tls.version.1.3", OK, "only TLS 1.3")
	want(t, rep, "cert.chain", OK, "verifies to the cluster CA")
	want(t, rep, "cert.name", OK, `"127.0.0.1"`)
	want(t, rep, "cert.expiry", OK, "expires in 8") // 89 or 90 days
	want(t, rep, "cert.key", OK, "ECDSA P-256")
	want(t, rep, "quic.reachable", OK, "answers")
	want(t, rep, "clock.skew", OK, "agree")
	want(t, rep, "trust.ca", OK, "the test")
	for _, id := range []string{"tls.version.1.2", "tls.version.1.1", "tls.version.1.0"} {
		if len(find(rep, id)) != 0 {
			t.Errorf("finding %s on a TLS 1.3-only server\n%s", id, dump(rep))
		}
	}
	if hasPrefix(rep, "tls.suite.") {
		t.Errorf("cipher suites listed for a TLS 1.3-only server\n%s", dump(rep))
	}
	if rep.CAPin == "" {
		t.Error("report has no CA pin")
	}
}

func TestTLS12WithCBCSuiteLowersTheGrade(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	conf := &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}
	rep := run(t, baseConfig(startAPI(t, ca, cert, conf), startQUIC(t, cert), ca))
	want(t, rep, "tls.version.1.3", Warn, "not offered")
	want(t, rep, "tls.version.1.2", Warn, "TLS 1.2 is offered")
	f := want(t, rep, "tls.suite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", Fail, "CBC")
	if f.Cap != C {
		t.Errorf("CBC suite caps at %q; want C", f.Cap)
	}
	want(t, rep, "tls.suite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", Info, "(TLS 1.2)")
	if rep.Grade != C {
		t.Fatalf("grade %s; want C\n%s", rep.Grade, dump(rep))
	}
	// The certificate is still graded from the TLS 1.2 handshake.
	want(t, rep, "cert.chain", OK, "verifies")
}

func TestTLS12OnlyAEADGetsB(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	// TLS 1.2 and 1.3, AEAD suites with forward secrecy only (Go's own
	// default list still has CBC suites, which would make it a C).
	conf := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}
	rep := run(t, baseConfig(startAPI(t, ca, cert, conf), startQUIC(t, cert), ca))
	want(t, rep, "tls.version.1.3", OK, "TLS 1.3 is offered")
	want(t, rep, "tls.version.1.2", Warn, "only a TLS 1.3-only endpoint gets an A")
	if rep.Grade != B {
		t.Fatalf("grade %s; want B\n%s", rep.Grade, dump(rep))
	}
}

func TestTLS10IsFound(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	conf := &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}
	rep := run(t, baseConfig(startAPI(t, ca, cert, conf), startQUIC(t, cert), ca))
	want(t, rep, "tls.version.1.0", Fail, "deprecated")
	if rep.Grade != C {
		t.Fatalf("grade %s; want C\n%s", rep.Grade, dump(rep))
	}
}

func TestExpiringCertificate(t *testing.T) {
	for _, tc := range []struct {
		life  time.Duration
		sev   Severity
		grade Grade
		text  string
	}{
		{10 * 24 * time.Hour, Warn, B, "expires in 9 days"},
		{2 * 24 * time.Hour, Fail, D, "expires in 4"},
	} {
		ca := newCA(t)
		cert := ca.leaf(t, tc.life, nil)
		rep := run(t, baseConfig(startAPI(t, ca, cert, tls13()), startQUIC(t, cert), ca))
		want(t, rep, "cert.expiry", tc.sev, tc.text)
		if rep.Grade != tc.grade {
			t.Errorf("certificate for %s: grade %s; want %s\n%s", tc.life, rep.Grade, tc.grade, dump(rep))
		}
	}
}

func TestCertFindings(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	chain := func(c tls.Certificate) []*x509.Certificate {
		var out []*x509.Certificate
		for _, d := range c.Certificate {
			x, _ := x509.ParseCertificate(d)
			out = append(out, x)
		}
		return out
	}
	good := chain(ca.leaf(t, 30*24*time.Hour, nil, "gw.example.com"))
	byID := func(fs []Finding, id string) Finding {
		for _, f := range fs {
			if f.ID == id {
				return f
			}
		}
		t.Fatalf("no finding %s in %+v", id, fs)
		return Finding{}
	}
	t.Run("foreign CA", func(t *testing.T) {
		other := x509.NewCertPool()
		other.AddCert(newCA(t).cert)
		f := byID(CertFindings(good, other, "gw.example.com", now), "cert.chain")
		if f.Severity != Fail || f.Cap != F {
			t.Errorf("got %+v; want a failure capping at F", f)
		}
	})
	t.Run("name not covered", func(t *testing.T) {
		f := byID(CertFindings(good, roots, "other.example.com", now), "cert.name")
		if f.Severity != Fail || f.Cap != F || f.What != `the certificate does not cover "other.example.com" (it names gw.example.com, 127.0.0.1)` {
			t.Errorf("got %+v", f)
		}
	})
	t.Run("expired", func(t *testing.T) {
		f := byID(CertFindings(good, roots, "gw.example.com", now.Add(31*24*time.Hour)), "cert.expiry")
		if f.Severity != Fail || f.Cap != F {
			t.Errorf("got %+v", f)
		}
	})
	t.Run("short RSA key", func(t *testing.T) {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Skip("this Go refuses 1024-bit RSA keys:", err)
		}
		c := chain(ca.leaf(t, 30*24*time.Hour, k, "gw.example.com"))
		f := byID(CertFindings(c, roots, "gw.example.com", now), "cert.key")
		if f.Severity != Fail || f.What != "the certificate's key is RSA 1024 bits, too short" {
			t.Errorf("got %+v", f)
		}
	})
	t.Run("no roots", func(t *testing.T) {
		for _, f := range CertFindings(good, nil, "gw.example.com", now) {
			if f.ID == "cert.chain" {
				t.Errorf("chain graded without roots: %+v", f)
			}
		}
	})
}

func TestShortLivedCertificateExpiry(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: start, NotAfter: start.Add(12 * time.Hour)}
	for _, tc := range []struct {
		at  time.Duration
		sev Severity
		cap Grade
	}{
		{time.Hour, OK, ""},                      // fresh
		{8 * time.Hour, OK, ""},                  // re-issued at two thirds: still fine
		{9*time.Hour + time.Minute, Warn, B},     // under a quarter of its life left: re-issue overdue
		{10*time.Hour + 31*time.Minute, Fail, D}, // under an eighth
		{13 * time.Hour, Fail, F},                // expired
	} {
		f := expiryFinding(leaf, start.Add(tc.at))
		if f.Severity != tc.sev || f.Cap != tc.cap {
			t.Errorf("at %s: %+v; want %s capped at %q", tc.at, f, tc.sev, tc.cap)
		}
		if tc.sev != Fail || tc.cap != F {
			if !strings.Contains(f.What, "a short-lived certificate of 12h0m0s") {
				t.Errorf("at %s: %q does not say it is short-lived", tc.at, f.What)
			}
		}
	}
}

func TestStalledAPI(t *testing.T) {
	// Accepts TCP connections and never says a word: every probe ends at
	// its own deadline, and the check says what happened.
	addr := serve(t, func(c net.Conn) {
		var b [1]byte
		_, _ = c.Read(b[:]) // until the doctor gives up and closes
		_, _ = io.Copy(io.Discard, c)
	})
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(addr, startQUIC(t, cert), ca)
	cfg.Timeout = time.Second // the outcome does not depend on it, only the test's length
	rep := run(t, cfg)
	want(t, rep, "api.tls", Fail, "completes no TLS handshake (1.0 to 1.3) within 1s each")
	want(t, rep, "quic.reachable", OK, "answers")
	if rep.Grade != F {
		t.Errorf("grade %s; want F", rep.Grade)
	}
}
