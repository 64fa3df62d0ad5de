package doctor

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// Expiry thresholds of the leaf certificate.
const (
	ExpiryWarn = 14 * 24 * time.Hour
	ExpiryFail = 3 * 24 * time.Hour
)

// CertFindings grades the chain a server presented (leaf first): does it
// verify to roots, cover host, how long until it expires, its key and
// signature algorithms. roots nil means no trust anchor is known: the
// chain is not verified (the caller says why in a finding of its own).
func CertFindings(chain []*x509.Certificate, roots *x509.CertPool, host string, now time.Time) []Finding {
	const check = "api"
	if len(chain) == 0 {
		return []Finding{fail(check, "cert.chain", F, "the API presented no certificate", "configure the gateway's TLS certificate")}
	}
	leaf := chain[0]
	var out []Finding
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			out = append(out, fail(check, "cert.chain", F, fmt.Sprintf("the certificate chain does not verify to the cluster CA: %v", err),
				"check the gateway serves a certificate from its own cluster CA (and that you reach the right gateway, or pass the right --ca)"))
		} else {
			out = append(out, ok(check, "cert.chain", "the certificate chain verifies to the cluster CA"))
		}
	}
	if err := leaf.VerifyHostname(host); err != nil {
		out = append(out, fail(check, "cert.name", F, fmt.Sprintf("the certificate does not cover %q (it names %s)", host, names(leaf)),
			fmt.Sprintf("add %s to the gateway's --name list, or use a name the certificate covers", host)))
	} else {
		out = append(out, ok(check, "cert.name", fmt.Sprintf("the certificate covers %q", host)))
	}
	out = append(out, expiryFinding(leaf, now))
	out = append(out, keyFinding(leaf))
	out = append(out, sigFindings(chain)...)
	return out
}

func names(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 {
		return "no names"
	}
	return strings.Join(n, ", ")
}

// expiryFinding grades the time left on the leaf. The thresholds are
// ExpiryWarn and ExpiryFail, shortened for a short-lived certificate (the
// gateway's own lives hours and is re-issued at two thirds of its life) to
// a quarter and an eighth of its lifetime: such a certificate is only late
// when its automatic re-issue is overdue.
func expiryFinding(leaf *x509.Certificate, now time.Time) Finding {
	const check, id = "api", "cert.expiry"
	left := leaf.NotAfter.Sub(now)
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	warnAt, failAt := min(ExpiryWarn, life/4), min(ExpiryFail, life/8)
	when := leaf.NotAfter.UTC().Format(time.RFC3339)
	in := fmt.Sprintf("%d days", int(left.Hours()/24))
	if left < 2*24*time.Hour {
		in = left.Round(time.Minute).String()
	}
	lifetime := ""
	if life < ExpiryWarn {
		lifetime = fmt.Sprintf(" (a short-lived certificate of %s)", life.Round(time.Minute))
	}
	renew := "renew the gateway's certificate: an operator's certificate (--tls-cert) is reloaded when its files change; the gateway's own is re-issued automatically, and its log says why it was not"
	switch {
	case now.Before(leaf.NotBefore):
		return fail(check, id, F, fmt.Sprintf("the certificate is not valid before %s (this machine's clock says %s)",
			leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)), "check the clocks of the gateway and of this machine (NTP)")
	case left <= 0:
		return fail(check, id, F, fmt.Sprintf("the certificate expired on %s", when), renew)
	case left < failAt:
		return fail(check, id, D, fmt.Sprintf("the certificate%s expires in %s, on %s", lifetime, in, when), renew)
	case left < warnAt:
		return warn(check, id, B, fmt.Sprintf("the certificate%s expires in %s, on %s", lifetime, in, when), renew)
	}
	return ok(check, id, fmt.Sprintf("the certificate%s expires in %s, on %s", lifetime, in, when))
}

func keyFinding(leaf *x509.Certificate) Finding {
	const check, id = "api", "cert.key"
	fix := "issue the gateway's certificate with an ECDSA P-256 or Ed25519 key, or RSA of at least 2048 bits"
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fail(check, id, F, fmt.Sprintf("the certificate's key is RSA %d bits, too short", n), fix)
		} else {
			return ok(check, id, fmt.Sprintf("the certificate's key is RSA %d bits", n))
		}
	case *ecdsa.PublicKey:
		if n := k.Curve.Params().BitSize; n < 256 {
			return fail(check, id, F, fmt.Sprintf("the certificate's key is ECDSA %s, too weak", k.Curve.Params().Name), fix)
		}
		return ok(check, id, fmt.Sprintf("the certificate's key is ECDSA %s", k.Curve.Params().Name))
	case ed25519.PublicKey:
		return ok(check, id, "the certificate's key is Ed25519")
	}
	return warn(check, id, B, fmt.Sprintf("the certificate's key is of an unusual type (%s)", leaf.PublicKeyAlgorithm), fix)
}

// sigFindings checks the signature algorithm of every certificate the
// server sent (a self-signed root's own signature does not matter).
func sigFindings(chain []*x509.Certificate) []Finding {
	const check = "api"
	var out []Finding
	weak := false
	for i, c := range chain {
		if i > 0 && c.CheckSignatureFrom(c) == nil {
			continue // a root: its self-signature is not relied on
		}
		switch c.SignatureAlgorithm {
		case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1, x509.UnknownSignatureAlgorithm:
			weak = true
			out = append(out, fail(check, "cert.signature", F, fmt.Sprintf("certificate %q is signed with %s, which can be forged", c.Subject.CommonName, c.SignatureAlgorithm),
				"re-issue it with a SHA-256 (or better) signature"))
		}
	}
	if !weak {
		out = append(out, ok(check, "cert.signature", fmt.Sprintf("the certificate is signed with %s", chain[0].SignatureAlgorithm)))
	}
	return out
}
