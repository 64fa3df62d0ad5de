package doctor

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"gateway.example.com":           "gateway.example.com",
		"héllo wörld":                   "héllo wörld",
		"evil\x1b[2J\x1b]0;pwned\x07.x": `evil\x1b[2J\x1b]0;pwned\a.x`,
		"a\u202egnp.exe":                `a\u202egnp.exe`,
		"bad\xffutf8\r\n":               `bad\xffutf8\r\n`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q; want %q", in, got, want)
		}
	}
}

// noControls fails on a finding carrying a terminal control character.
func noControls(t *testing.T, fs []Finding) {
	t.Helper()
	for _, f := range fs {
		for _, s := range []string{f.What, f.Fix} {
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0x9b || r == '\u202e' }) {
				t.Errorf("finding %s prints %q raw", f.ID, s)
			}
		}
	}
}

// TestServerTextIsEscaped: certificate names, the SSH version line and
// algorithm names from a hostile server reach the report escaped.
func TestServerTextIsEscaped(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil, "evil\x1b[2J\x1b]0;pwned\x07.example")
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	fs := CertFindings([]*x509.Certificate{leaf}, nil, "gateway.example", time.Now())
	noControls(t, fs)
	found := false
	for _, f := range fs {
		if f.ID == "cert.name" && strings.Contains(f.What, `evil\x1b[2J`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no cert.name finding naming the escaped name: %+v", fs)
	}

	k := oldOpenSSH
	k.CiphersCS = append([]string{"3des-cbc\x1b[31m", "arcfour\u202e"}, k.CiphersCS...)
	k.Kex = append([]string{"diffie-hellman-group1-sha1\x1b[8m"}, k.Kex...)
	noControls(t, SSHFindings("SSH-2.0-OpenSSH_8.9\x1b[2J", k))
}
