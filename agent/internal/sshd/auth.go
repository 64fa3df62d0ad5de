package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// certInfo is what a certificate says, once checked.
type certInfo struct {
	cert      *gossh.Certificate
	user      string // the key id's user=
	sessionID string // the key id's session=
}

// grant is what a connection may do: the session behind the key the client
// proved it holds.
type grant struct {
	key      string // the authenticated key, marshalled
	cert     *certInfo
	sess     Session
	user     *osUser
	deadline time.Time // the session's, capped by the certificate's
}

// can reports whether the session and the certificate both allow ext
// ("permit-port-forwarding", ...).
func (g *grant) can(ext string) bool {
	_, ok := g.cert.cert.Extensions[ext]
	return ok
}

const sourceAddressOption = "source-address"

// errNoSession: a key id without a session (a login certificate).
var errNoSession = errors.New("session")

// parseKeyID parses "user=NAME serial=HEX session=ID". The session is
// required; unknown fields are ignored, repeated ones refused.
func parseKeyID(id string) (user, session string, err error) {
	seen := map[string]bool{}
	for _, f := range strings.Fields(id) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if seen[k] {
			return "", "", fmt.Errorf("key id %q names %s twice", id, k)
		}
		seen[k] = true
		switch k {
		case "user":
			user = v
		case "session":
			session = v
		}
	}
	if session == "" {
		return user, "", fmt.Errorf("key id %q names no %w", id, errNoSession)
	}
	return user, session, nil
}

// checkCert checks key as a user certificate for login, connecting from
// remote. It does everything that needs no proof of possession: the
// session is looked up only later, in verify.
func (s *Server) checkCert(login string, remote net.Addr, key gossh.PublicKey) (*certInfo, error) {
	cert, ok := key.(*gossh.Certificate)
	if !ok {
		return nil, errors.New("plain keys are not accepted, only certificates from the user CA")
	}
	if cert.CertType != gossh.UserCert {
		return nil, fmt.Errorf("certificate serial %d is not a user certificate", cert.Serial)
	}
	if _, ok := cert.SignatureKey.(*gossh.Certificate); ok {
		return nil, fmt.Errorf("certificate serial %d is signed by a certificate, not by a CA key", cert.Serial)
	}
	if len(cert.ValidPrincipals) == 0 {
		// OpenSSH reads no principals as "anyone"; we never do.
		return nil, fmt.Errorf("certificate serial %d names no principals", cert.Serial)
	}
	if !s.isUserAuthority(cert.SignatureKey) {
		return nil, fmt.Errorf("certificate serial %d is not signed by a trusted user CA", cert.Serial)
	}
	checker := gossh.CertChecker{
		SupportedCriticalOptions: []string{sourceAddressOption},
		Clock:                    s.clock,
		IsRevoked: func(c *gossh.Certificate) bool {
			return s.cfg.IsRevoked != nil && s.cfg.IsRevoked(c.Serial)
		},
	}
	// CheckCert verifies the CA signature, revocation, principals and the
	// validity window.
	if err := checker.CheckCert(login, cert); err != nil {
		return nil, err
	}
	if opt, ok := cert.CriticalOptions[sourceAddressOption]; ok {
		if err := checkSourceAddress(remote, opt); err != nil {
			return nil, err
		}
	}
	user, session, err := parseKeyID(cert.KeyId)
	if err != nil && !(s.cfg.SessionFromConn && errors.Is(err, errNoSession) && user != "") {
		return nil, err
	}
	return &certInfo{cert: cert, user: user, sessionID: session}, nil
}

func (s *Server) isUserAuthority(k gossh.PublicKey) bool {
	for _, ca := range s.cfg.UserCAs() {
		if _, isCert := ca.(*gossh.Certificate); isCert || ca == nil {
			continue // a certificate is never an authority
		}
		if keysEqual(ca, k) {
			return true
		}
	}
	return false
}

func keysEqual(a, b gossh.PublicKey) bool {
	return a != nil && b != nil && string(a.Marshal()) == string(b.Marshal())
}

// checkSourceAddress enforces the source-address critical option: a
// comma-separated list of addresses and CIDR prefixes.
func checkSourceAddress(remote net.Addr, list string) error {
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
	}
	return fmt.Errorf("address %v is not allowed by the certificate's source-address %q", remote, list)
}

// lookupTimeout bounds LookupSession.
const lookupTimeout = 15 * time.Second

// verify turns a checked certificate whose key the client proved it holds
// into a grant. Its errors are shown to the user.
func (s *Server) verify(ctx context.Context, login string, info *certInfo) (*grant, error) {
	if s.sessionEnded(info.sessionID) {
		return nil, fmt.Errorf("session %s has ended", info.sessionID)
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	sess, err := s.cfg.LookupSession(ctx, info.sessionID, info.cert.Serial)
	if err != nil {
		return nil, err
	}
	switch {
	case info.sessionID == "":
		// A login certificate, accepted for the connection's own session
		// (Config.SessionFromConn): it must be the session's user's.
		if sess.ID == "" || sess.User != info.user {
			return nil, errors.New("this certificate is not for this session's user")
		}
		info.sessionID = sess.ID
	case sess.ID != info.sessionID:
		return nil, fmt.Errorf("session %s not found", info.sessionID)
	}
	if sess.Login != login && !slices.Contains(sess.Logins, login) {
		return nil, fmt.Errorf("session %s does not grant login %q", sess.ID, login)
	}
	deadline := sess.Deadline
	if vb := info.cert.ValidBefore; vb != gossh.CertTimeInfinity {
		if t := time.Unix(int64(vb), 0); deadline.IsZero() || t.Before(deadline) {
			deadline = t
		}
	}
	if !s.clock().Before(deadline) {
		return nil, errors.New(expiredMessage(deadline))
	}
	u, err := s.osUsers.lookup(login)
	if err != nil {
		return nil, err
	}
	return &grant{cert: info, sess: sess, user: u, deadline: deadline}, nil
}

func expiredMessage(deadline time.Time) string {
	return "session expired at " + deadline.UTC().Format("15:04:05") + " UTC: run tunnel ssh again for a new session"
}

func idleMessage(d time.Duration) string {
	var s string
	switch m := int(d / time.Minute); {
	case d%time.Minute != 0:
		s = d.String()
	case m == 1:
		s = "1 minute"
	default:
		s = fmt.Sprintf("%d minutes", m)
	}
	return "session closed after " + s + " of inactivity"
}
