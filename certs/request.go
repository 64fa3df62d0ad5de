package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Limits on untrusted input.
const (
	// MaxAuthorizedKeySize bounds the input of ParseSSHPublicKey.
	MaxAuthorizedKeySize = 8 << 10
	// MaxCSRSize bounds the input of ParseCSR.
	MaxCSRSize = 16 << 10
	// MaxPrincipalLen bounds an SSH user principal (a login name).
	MaxPrincipalLen = 64
	// maxHostPrincipalLen bounds an SSH host principal (a host name).
	maxHostPrincipalLen = 253
	// maxSessionIDLen bounds the session id carried in an SSH key id.
	maxSessionIDLen = 128
)

// ParseSSHPublicKey parses one authorized_keys line, such as
// "ssh-ed25519 AAAA… alice@laptop", sent by a client to be certified. It
// accepts only ssh-ed25519 and ecdsa-sha2-nistp256 keys: certificates and
// other key types are refused with ErrUnsupportedKey; options, several keys,
// a type that does not match the key and oversized or malformed input are
// refused with ErrInvalidRequest.
func ParseSSHPublicKey(authorizedKey []byte) (ssh.PublicKey, error) {
	pub, err := parseSSHPublicKey(authorizedKey)
	if err != nil {
		return nil, fmt.Errorf("parse SSH public key: %w", err)
	}
	return pub, nil
}

func parseSSHPublicKey(in []byte) (ssh.PublicKey, error) {
	if len(in) > MaxAuthorizedKeySize {
		return nil, fmt.Errorf("%w: input is %d bytes, more than the %d allowed", ErrInvalidRequest, len(in), MaxAuthorizedKeySize)
	}
	line := bytes.TrimSpace(in)
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: no key given", ErrInvalidRequest)
	}
	if bytes.ContainsAny(line, "\r\n") {
		return nil, fmt.Errorf("%w: give exactly one key, on one line", ErrInvalidRequest)
	}
	pub, _, options, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return nil, fmt.Errorf("%w: not an authorized_keys line such as \"ssh-ed25519 AAAA… comment\": %w", ErrInvalidRequest, err)
	}
	if len(options) > 0 {
		return nil, fmt.Errorf("%w: authorized_keys options are not accepted; give only the key", ErrInvalidRequest)
	}
	if pub, err = checkSSHKey(pub); err != nil {
		return nil, err
	}
	if typ, _, _ := bytes.Cut(line, []byte(" ")); string(typ) != pub.Type() {
		return nil, fmt.Errorf("%w: the line names key type %q but holds a %s key", ErrInvalidRequest, printable(typ), pub.Type())
	}
	return pub, nil
}

// ParseCSR parses a PKCS#10 certificate request, PEM ("CERTIFICATE
// REQUEST") or DER, sent by a client or agent to be certified. Its signature
// must verify, proving that the sender holds the private key, and its key must
// be Ed25519 or ECDSA P-256 (else ErrUnsupportedKey). Only the public key is
// meant to be used: the subject and extensions the sender asked for are the
// caller's to ignore. Malformed or oversized input is refused with
// ErrInvalidRequest.
func ParseCSR(pemOrDER []byte) (*x509.CertificateRequest, error) {
	csr, err := parseCSR(pemOrDER)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	return csr, nil
}

func parseCSR(in []byte) (*x509.CertificateRequest, error) {
	if len(in) > MaxCSRSize {
		return nil, fmt.Errorf("%w: input is %d bytes, more than the %d allowed", ErrInvalidRequest, len(in), MaxCSRSize)
	}
	der := in
	if block, rest := pem.Decode(in); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block is %q, want \"CERTIFICATE REQUEST\"", ErrInvalidRequest, printable([]byte(block.Type)))
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, fmt.Errorf("%w: unexpected data after the PEM block", ErrInvalidRequest)
		}
		der = block.Bytes
	} else if bytes.HasPrefix(bytes.TrimSpace(in), []byte("-----BEGIN")) {
		return nil, fmt.Errorf("%w: malformed PEM", ErrInvalidRequest)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not a PKCS#10 certificate request: %w", ErrInvalidRequest, err)
	}
	if csr.PublicKey == nil {
		return nil, fmt.Errorf("%w: unknown public key algorithm: use Ed25519 or ECDSA P-256", ErrUnsupportedKey)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: the request's signature does not verify, so it does not prove possession of the private key: %w", ErrInvalidRequest, err)
	}
	return csr, nil
}

// printable shortens untrusted bytes for an error message.
func printable(b []byte) string {
	const maxLen = 40
	if len(b) > maxLen {
		b = b[:maxLen]
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}

// lifetime returns the lifetime of a user, agent or gateway certificate:
// ttl, or the default when it is zero, checked against roleMax (zero means
// the cluster maximum) and the cluster maximum. A lifetime above either
// maximum is refused, not shortened.
func (a *Authority) lifetime(ttl, roleMax time.Duration) (time.Duration, error) {
	if ttl < 0 {
		return 0, fmt.Errorf("%w: requested TTL %v is negative", ErrInvalidRequest, ttl)
	}
	if roleMax < 0 {
		return 0, fmt.Errorf("%w: role maximum TTL %v is negative", ErrInvalidRequest, roleMax)
	}
	limit, what := a.maxTTL, "cluster maximum"
	if roleMax != 0 && roleMax < limit {
		limit, what = roleMax, "role maximum"
	}
	if ttl == 0 {
		return min(DefaultUserTTL, limit), nil
	}
	if ttl > limit {
		return 0, fmt.Errorf("%w: requested TTL %v exceeds the %s of %v", ErrTTLTooLong, ttl, what, limit)
	}
	return ttl, nil
}

// Lifetimes of machine (agent and gateway) certificates. Machines renew
// their certificates automatically, at two thirds of their life, so the
// lifetime only bounds how long a machine may stay offline and still come
// back without a new join token.
const (
	DefaultMachineTTL = 24 * time.Hour
	MaxMachineTTL     = 7 * 24 * time.Hour
)

// machineLifetime is lifetime for agents and gateways: not capped by the
// user maximum, but by MaxMachineTTL (and max, if set).
func machineLifetime(ttl, max time.Duration) (time.Duration, error) {
	if ttl < 0 || max < 0 {
		return 0, fmt.Errorf("%w: negative TTL", ErrInvalidRequest)
	}
	limit := MaxMachineTTL
	if max != 0 && max < limit {
		limit = max
	}
	if ttl == 0 {
		return min(DefaultMachineTTL, limit), nil
	}
	if ttl > limit {
		return 0, fmt.Errorf("%w: requested TTL %v exceeds the machine maximum of %v", ErrTTLTooLong, ttl, limit)
	}
	return ttl, nil
}

// cleanPrincipals validates SSH principals and removes duplicates, keeping
// the first occurrence of each.
func cleanPrincipals(principals []string, maxLen int) ([]string, error) {
	if len(principals) == 0 {
		return nil, fmt.Errorf("%w: a certificate must name at least one principal (to OpenSSH, none means anyone)", ErrNoPrincipals)
	}
	out := make([]string, 0, len(principals))
	for _, p := range principals {
		if err := validatePrincipal(p, maxLen); err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func validatePrincipal(p string, maxLen int) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty principal", ErrInvalidRequest)
	case len(p) > maxLen:
		return fmt.Errorf("%w: principal %q is longer than %d characters", ErrInvalidRequest, printable([]byte(p)), maxLen)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: principal %q is not valid UTF-8", ErrInvalidRequest, printable([]byte(p)))
	}
	for _, r := range p {
		if r == ',' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: principal %q may not hold commas, white space or control characters", ErrInvalidRequest, p)
		}
	}
	return nil
}
