package certs

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// X509Request asks for an X.509 certificate for mutual TLS.
type X509Request struct {
	// ID is the certificate's subject. Its URI (tunnel://CLUSTER/KIND/NAME)
	// becomes the single URI SAN and its name the common name. Its cluster
	// must be the Authority's.
	ID identity.ID
	// PublicKey is the subject's key: ed25519.PublicKey or *ecdsa.PublicKey
	// on P-256.
	PublicKey crypto.PublicKey
	// TTL is the lifetime; zero means DefaultUserTTL, or MaxTTL if lower.
	TTL time.Duration
	// MaxTTL is the role's maximum lifetime; zero means the cluster's.
	MaxTTL time.Duration
	// DNSNames and IPAddresses name a server; at least one is needed for a
	// server certificate, and neither is allowed in a client certificate.
	DNSNames    []string
	IPAddresses []net.IP
}

// IssueX509Client signs a client certificate (ExtKeyUsageClientAuth) for a
// user, agent or gateway.
func (a *Authority) IssueX509Client(req X509Request) (*x509.Certificate, error) {
	if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 {
		return nil, fmt.Errorf("issue X.509 client certificate: %w: DNS names and IP addresses belong in server certificates", ErrInvalidRequest)
	}
	cert, err := a.issueX509(req, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	if err != nil {
		return nil, fmt.Errorf("issue X.509 client certificate for %s: %w", req.ID, err)
	}
	return cert, nil
}

// IssueX509Server signs a server certificate, usable for client
// authentication too (a gateway talks to its peers both ways). The request
// must name at least one DNS name or IP address.
func (a *Authority) IssueX509Server(req X509Request) (*x509.Certificate, error) {
	cert, err := a.issueX509Server(req)
	if err != nil {
		return nil, fmt.Errorf("issue X.509 server certificate for %s: %w", req.ID, err)
	}
	return cert, nil
}

func (a *Authority) issueX509Server(req X509Request) (*x509.Certificate, error) {
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return nil, fmt.Errorf("%w: a server certificate needs at least one DNS name or IP address", ErrInvalidRequest)
	}
	for _, n := range req.DNSNames {
		if err := validateDNSName(n); err != nil {
			return nil, err
		}
	}
	for _, ip := range req.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, fmt.Errorf("%w: malformed IP address %v", ErrInvalidRequest, ip)
		}
	}
	return a.issueX509(req, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
}

func (a *Authority) issueX509(req X509Request, usages []x509.ExtKeyUsage) (*x509.Certificate, error) {
	if err := validateID(req.ID); err != nil {
		return nil, err
	}
	if req.ID.Cluster != a.cluster {
		return nil, fmt.Errorf("%w: identity belongs to cluster %q, not %q", ErrInvalidRequest, req.ID.Cluster, a.cluster)
	}
	if err := checkPublicKey(req.PublicKey); err != nil {
		return nil, err
	}
	lifetime := a.lifetime
	if req.ID.Kind != identity.User {
		lifetime = machineLifetime
	}
	ttl, err := lifetime(req.TTL, req.MaxTTL)
	if err != nil {
		return nil, err
	}
	now := a.now()
	notAfter := now.Add(ttl)
	ca := a.ks().xca
	if notAfter.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("the cluster X.509 CA expires at %s, before the certificate would: rotate the CA", ca.cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := a.x509Serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.ID.Name},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{req.ID.URI()},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		AuthorityKeyId:        ca.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(a.reader(), tmpl, ca.cert, req.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the signed certificate: %w", err)
	}
	return cert, nil
}

// validateID checks every part of an identity.
func validateID(id identity.ID) error {
	switch id.Kind {
	case identity.User, identity.Agent, identity.Gateway:
	default:
		return fmt.Errorf("%w: unknown principal kind %q", ErrInvalidRequest, printable([]byte(id.Kind)))
	}
	if err := identity.ValidateName("cluster", id.Cluster); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if err := identity.ValidateName(string(id.Kind), id.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	// The URI must read back as the same identity.
	if got, err := identity.ParseURI(id.URI()); err != nil || got != id {
		return fmt.Errorf("%w: identity %s does not survive its URI form", ErrInvalidRequest, id)
	}
	return nil
}

// validateDNSName checks a server name: dot-separated labels of letters,
// digits, '-' and '_', not starting or ending with '-', at most 253
// characters, optionally starting with a "*." wildcard.
func validateDNSName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: DNS name %q %s", ErrInvalidRequest, printable([]byte(name)), why)
	}
	if name == "" {
		return fmt.Errorf("%w: empty DNS name", ErrInvalidRequest)
	}
	if len(name) > 253 {
		return bad("is longer than 253 characters")
	}
	rest := name
	rest = strings.TrimPrefix(rest, "*.")
	for label := range strings.SplitSeq(rest, ".") {
		if label == "" || len(label) > 63 {
			return bad("has an empty or over-long label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("has a label that starts or ends with '-'")
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return bad("may hold only letters, digits, '-', '_' and dots")
			}
		}
	}
	return nil
}

// X509SerialHex returns c's serial number in lowercase hex without leading
// zeros, the form kept in store records.
func X509SerialHex(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}
