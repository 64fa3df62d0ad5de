package certs

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/sshcert"
)

// SSHPermissions are the permit-* extensions of an SSH user certificate.
type SSHPermissions struct {
	PTY             bool // permit-pty
	PortForwarding  bool // permit-port-forwarding
	AgentForwarding bool // permit-agent-forwarding
	UserRC          bool // permit-user-rc
	X11Forwarding   bool // permit-X11-forwarding
}

// DefaultSSHPermissions returns what ssh-keygen grants by default except X11
// forwarding: a terminal, port and agent forwarding, and ~/.ssh/rc.
func DefaultSSHPermissions() SSHPermissions {
	return SSHPermissions{PTY: true, PortForwarding: true, AgentForwarding: true, UserRC: true}
}

func (p SSHPermissions) extensions() map[string]string {
	ext := map[string]string{}
	for _, e := range []struct {
		on   bool
		name string
	}{
		{p.PTY, "permit-pty"},
		{p.PortForwarding, "permit-port-forwarding"},
		{p.AgentForwarding, "permit-agent-forwarding"},
		{p.UserRC, "permit-user-rc"},
		{p.X11Forwarding, "permit-X11-forwarding"},
	} {
		if e.on {
			ext[e.name] = ""
		}
	}
	return ext
}

// SSHUserRequest asks for an SSH user certificate.
type SSHUserRequest struct {
	// User is who the certificate is for, a valid identity name; it goes
	// into the key id.
	User string
	// Principals are the logins the certificate allows. At least one is
	// needed (OpenSSH reads none as "anyone"); duplicates are removed.
	Principals []string
	// PublicKey is the user's ssh-ed25519 or ecdsa-sha2-nistp256 key.
	PublicKey ssh.PublicKey
	// TTL is the lifetime, ending at the session deadline; zero means
	// DefaultUserTTL, or MaxTTL if lower.
	TTL time.Duration
	// MaxTTL is the role's maximum lifetime; zero means the cluster's.
	MaxTTL time.Duration
	// SourceAddresses, if any, are the IP addresses and CIDR prefixes the
	// certificate may be used from (the source-address critical option).
	SourceAddresses []string
	// Permissions are the permit-* extensions; nil means
	// DefaultSSHPermissions().
	Permissions *SSHPermissions
	// SessionID, if set, goes into the key id, so that sshd's logs name the
	// session.
	SessionID string
}

// IssueSSHUser signs an SSH user certificate with the active user CA. Its
// key id is sshcert.Format's: "user=NAME serial=HEX", followed by
// " session=ID" when the request has a session id.
func (a *Authority) IssueSSHUser(req SSHUserRequest) (*ssh.Certificate, error) {
	cert, err := a.issueSSHUser(req)
	if err != nil {
		return nil, fmt.Errorf("issue SSH user certificate for %q: %w", printable([]byte(req.User)), err)
	}
	return cert, nil
}

func (a *Authority) issueSSHUser(req SSHUserRequest) (*ssh.Certificate, error) {
	if err := identity.ValidateName("user", req.User); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	principals, err := cleanPrincipals(req.Principals, MaxPrincipalLen)
	if err != nil {
		return nil, err
	}
	pub, err := checkSSHKey(req.PublicKey)
	if err != nil {
		return nil, err
	}
	ttl, err := a.lifetime(req.TTL, req.MaxTTL)
	if err != nil {
		return nil, err
	}
	opts := map[string]string{}
	if len(req.SourceAddresses) > 0 {
		if opts["source-address"], err = sourceAddress(req.SourceAddresses); err != nil {
			return nil, err
		}
	}
	if err := validateSessionID(req.SessionID); err != nil {
		return nil, err
	}
	perms := DefaultSSHPermissions()
	if req.Permissions != nil {
		perms = *req.Permissions
	}
	serial, err := a.sshSerial()
	if err != nil {
		return nil, err
	}
	keyID := sshcert.Format(sshcert.KeyID{User: req.User, Serial: strconv.FormatUint(serial, 16), Session: req.SessionID})
	now := a.now()
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: principals,
		ValidAfter:      unixSeconds(now.Add(-ClockSkew)),
		ValidBefore:     unixSeconds(now.Add(ttl)),
		Permissions: ssh.Permissions{
			CriticalOptions: opts,
			Extensions:      perms.extensions(),
		},
	}
	if err := cert.SignCert(a.reader(), a.ks().userCA.signer); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return cert, nil
}

// SSHHostRequest asks for an SSH host certificate.
type SSHHostRequest struct {
	// Host is the host's (agent's) name, a valid identity name; it goes into
	// the key id.
	Host string
	// Principals are the names clients reach the host by; at least one is
	// needed.
	Principals []string
	// PublicKey is the host's ssh-ed25519 or ecdsa-sha2-nistp256 key.
	PublicKey ssh.PublicKey
	// TTL is the lifetime; zero means DefaultHostTTL. Host certificates are
	// bound by MaxHostTTL, not by the user maximum.
	TTL time.Duration
}

// IssueSSHHost signs an SSH host certificate with the active host CA. Its
// key id is "host=NAME serial=HEX".
func (a *Authority) IssueSSHHost(req SSHHostRequest) (*ssh.Certificate, error) {
	cert, err := a.issueSSHHost(req)
	if err != nil {
		return nil, fmt.Errorf("issue SSH host certificate for %q: %w", printable([]byte(req.Host)), err)
	}
	return cert, nil
}

func (a *Authority) issueSSHHost(req SSHHostRequest) (*ssh.Certificate, error) {
	if err := identity.ValidateName("host", req.Host); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	principals, err := cleanPrincipals(req.Principals, maxHostPrincipalLen)
	if err != nil {
		return nil, err
	}
	pub, err := checkSSHKey(req.PublicKey)
	if err != nil {
		return nil, err
	}
	ttl := req.TTL
	switch {
	case ttl < 0:
		return nil, fmt.Errorf("%w: requested TTL %v is negative", ErrInvalidRequest, ttl)
	case ttl == 0:
		ttl = DefaultHostTTL
	case ttl > MaxHostTTL:
		return nil, fmt.Errorf("%w: requested TTL %v exceeds the host certificate maximum of %v", ErrTTLTooLong, ttl, MaxHostTTL)
	}
	serial, err := a.sshSerial()
	if err != nil {
		return nil, err
	}
	now := a.now()
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        ssh.HostCert,
		KeyId:           "host=" + req.Host + " serial=" + strconv.FormatUint(serial, 16),
		ValidPrincipals: principals,
		ValidAfter:      unixSeconds(now.Add(-ClockSkew)),
		ValidBefore:     unixSeconds(now.Add(ttl)),
	}
	if err := cert.SignCert(a.reader(), a.ks().hostCA.signer); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return cert, nil
}

// sourceAddress validates IP addresses and CIDR prefixes and joins them in
// canonical form for the source-address critical option. A prefix with host
// bits set is refused: OpenSSH refuses it too, and with it the certificate.
func sourceAddress(addrs []string) (string, error) {
	out := make([]string, 0, len(addrs))
	for _, s := range addrs {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return "", fmt.Errorf("%w: source address %q is not an IP address or CIDR prefix", ErrInvalidRequest, printable([]byte(s)))
			}
			if p.Masked() != p {
				return "", fmt.Errorf("%w: source address %q has bits set after the prefix length; did you mean %s?", ErrInvalidRequest, s, p.Masked())
			}
			out = append(out, p.String())
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return "", fmt.Errorf("%w: source address %q is not an IP address or CIDR prefix", ErrInvalidRequest, printable([]byte(s)))
		}
		out = append(out, ip.String())
	}
	return strings.Join(out, ","), nil
}

// validateSessionID checks that id, if set, is printable ASCII without
// spaces, so that it cannot be mistaken for another field of the key id.
func validateSessionID(id string) error {
	if len(id) > maxSessionIDLen {
		return fmt.Errorf("%w: session id is longer than %d characters", ErrInvalidRequest, maxSessionIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: session id %q may hold only printable ASCII without spaces", ErrInvalidRequest, printable([]byte(id)))
		}
	}
	return nil
}

// unixSeconds converts t for an SSH certificate, where times are unsigned.
func unixSeconds(t time.Time) uint64 {
	if s := t.Unix(); s > 0 {
		return uint64(s)
	}
	return 0
}

// SSHSerialHex returns c's serial number in lowercase hex without leading
// zeros, the form kept in store records.
func SSHSerialHex(c *ssh.Certificate) string {
	if c == nil {
		return ""
	}
	return strconv.FormatUint(c.Serial, 16)
}
