package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/sshcert"
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

// errNoSession: a key id without a session (a login certificate).
var errNoSession = errors.New("session")

// checkCert checks key as a user certificate for login, connecting from
// remote, with the cluster's one check (sshcert): CA trust, validity at the
// injected clock, principal, revocation, source-address and key id. It does
// everything that needs no proof of possession: the session is looked up
// only later, in verify. A key id without a session is accepted only with
// Config.SessionFromConn.
func (s *Server) checkCert(login string, remote net.Addr, key gossh.PublicKey) (*certInfo, error) {
	checker := &sshcert.Checker{
		UserCAs: s.cfg.UserCAs,
		Clock:   s.clock,
		IsRevoked: func(c *gossh.Certificate) bool {
			return s.cfg.IsRevoked != nil && s.cfg.IsRevoked(c.Serial)
		},
	}
	c, err := checker.Check(key, login, remote)
	if err != nil {
		return nil, err
	}
	if c.KeyID.Session == "" && !s.cfg.SessionFromConn {
		return nil, fmt.Errorf("key id %q names no %w", c.KeyId, errNoSession)
	}
	return &certInfo{cert: c.Certificate, user: c.KeyID.User, sessionID: c.KeyID.Session}, nil
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
