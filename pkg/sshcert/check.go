package sshcert

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// SourceAddressOption is the critical option that restricts where a
// certificate may be used from; the only critical option accepted.
const SourceAddressOption = "source-address"

// Reasons a certificate is refused, for errors.Is: each caller words them
// for its users.
var (
	ErrNotCertificate     = errors.New("plain keys are not accepted, only certificates from the user CA")
	ErrNotUserCert        = errors.New("not a user certificate")
	ErrSignedByCert       = errors.New("signed by a certificate, not by a CA key")
	ErrNoPrincipals       = errors.New("names no principals")
	ErrUntrustedCA        = errors.New("not signed by a trusted user CA")
	ErrInvalid            = errors.New("certificate refused")
	ErrSourceAddress      = errors.New("source address not allowed")
	ErrRevokedCertificate = errors.New("certificate revoked")
)

// Checker checks SSH user certificates against the user CAs it trusts.
type Checker struct {
	// UserCAs returns the trusted user CA keys; called on every check, so
	// a rotation is seen at once. A certificate is never an authority.
	UserCAs func() []ssh.PublicKey
	// Clock is the time validity is checked at; nil means time.Now.
	Clock func() time.Time
	// IsRevoked, if set, refuses the certificates it reports.
	IsRevoked func(*ssh.Certificate) bool
}

// Cert is a certificate that passed Check, with its parsed key id.
type Cert struct {
	*ssh.Certificate
	KeyID KeyID
}

// Check checks key as a user certificate for principal (empty: any of the
// certificate's principals, when the principals are checked elsewhere),
// used from remote: a certificate, of user type, signed by a trusted user
// CA key (not by a certificate), with principals, valid now by Clock,
// not revoked, with no critical option but source-address, which remote
// satisfies, and with a key id Parse accepts. Its errors wrap one of the
// Err values.
func (c *Checker) Check(key ssh.PublicKey, principal string, remote net.Addr) (*Cert, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, ErrNotCertificate
	}
	if cert.CertType != ssh.UserCert {
		return nil, fmt.Errorf("certificate serial %d is %w", cert.Serial, ErrNotUserCert)
	}
	if _, ok := cert.SignatureKey.(*ssh.Certificate); ok {
		return nil, fmt.Errorf("certificate serial %d is %w", cert.Serial, ErrSignedByCert)
	}
	if len(cert.ValidPrincipals) == 0 {
		// OpenSSH reads no principals as "anyone"; we never do.
		return nil, fmt.Errorf("certificate serial %d %w", cert.Serial, ErrNoPrincipals)
	}
	if !c.IsUserCA(cert.SignatureKey) {
		return nil, fmt.Errorf("certificate serial %d is %w", cert.Serial, ErrUntrustedCA)
	}
	clock := c.Clock
	if clock == nil {
		clock = time.Now
	}
	checker := ssh.CertChecker{
		SupportedCriticalOptions: []string{SourceAddressOption},
		Clock:                    clock,
		IsUserAuthority:          c.IsUserCA,
	}
	if principal == "" {
		principal = cert.ValidPrincipals[0]
	}
	// CheckCert verifies the CA signature, the principal, the critical
	// options and the validity window.
	if err := checker.CheckCert(principal, cert); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if c.IsRevoked != nil && c.IsRevoked(cert) {
		return nil, fmt.Errorf("%w: certificate serial %d is revoked", ErrRevokedCertificate, cert.Serial)
	}
	if list, ok := cert.CriticalOptions[SourceAddressOption]; ok {
		if err := CheckSourceAddress(remote, list); err != nil {
			return nil, err
		}
	}
	id, err := Parse(cert.KeyId)
	if err != nil {
		return nil, err
	}
	return &Cert{Certificate: cert, KeyID: id}, nil
}

// IsUserCA reports whether k is one of the trusted user CA keys.
func (c *Checker) IsUserCA(k ssh.PublicKey) bool {
	if k == nil || c.UserCAs == nil {
		return false
	}
	if _, isCert := k.(*ssh.Certificate); isCert {
		return false
	}
	m := k.Marshal()
	for _, ca := range c.UserCAs() {
		if _, isCert := ca.(*ssh.Certificate); isCert || ca == nil {
			continue // a certificate is never an authority
		}
		if string(ca.Marshal()) == string(m) {
			return true
		}
	}
	return false
}

// CheckSourceAddress enforces a source-address critical option: a
// comma-separated list of addresses and CIDR prefixes that remote's IP
// must match. Its errors wrap ErrSourceAddress.
func CheckSourceAddress(remote net.Addr, list string) error {
	var ip netip.Addr
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if remote != nil {
			if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	ip = ip.Unmap()
	if ip.IsValid() {
		for _, s := range strings.Split(list, ",") {
			if p, err := netip.ParsePrefix(s); err == nil && p.Contains(ip) {
				return nil
			}
			if a, err := netip.ParseAddr(s); err == nil && a.Unmap() == ip {
				return nil
			}
		}
		return fmt.Errorf("%w: address %v is not allowed by the certificate's source-address %q", ErrSourceAddress, ip, list)
	}
	return fmt.Errorf("%w: the certificate may be used only from %s", ErrSourceAddress, list)
}
