package jumphost

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/sshcert"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Refusals shown to the user (as an SSH banner at login, or as the reason
// a channel was refused).
var (
	errNotCert        = errors.New("log in with your tunnel certificate: run tunnel login, then tunnel config ssh")
	errSessionCert    = errors.New("a tunnel ssh session certificate cannot log in to the jump host: use the certificate from tunnel login (TUNNEL_HOME/key-cert.pub)")
	errRevoked        = errors.New("your certificate was revoked by an administrator: run tunnel login")
	errUnknownSerial  = errors.New("this gateway has no record of your certificate: run tunnel login")
	errLocked         = errors.New("your account is locked or gone: ask an administrator")
	errStoreDown      = errors.New("the gateway cannot check your certificate right now")
	errNoStore        = errors.New(store.UnavailableMessage)
	errAccessRevoked  = errors.New("your access through this connection was revoked by an administrator: run tunnel login")
	errNotAuthed      = errors.New("not authenticated")
	errNoPrincipals   = errors.New("certificate without principals refused")
	errNotFromCluster = errors.New("certificate refused: it was not issued by this cluster's user CA (run tunnel login)")
)

// who is the identity proved on one SSH connection.
type who struct {
	login  string // the SSH user name it connected as
	user   store.User
	cert   *gossh.Certificate
	serial string
}

// serverConfig is gliderlabs' ServerConfigCallback: x/crypto's settings
// for one connection, whose verified-key callback makes the grant.
func (j *Server) serverConfig(ctx gliderssh.Context) *gossh.ServerConfig {
	c, _ := ctx.Value(connKey{}).(*conn)
	cfg := &gossh.ServerConfig{}
	cfg.KeyExchanges = []string{"curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"}
	cfg.Ciphers = []string{"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"}
	cfg.MACs = []string{"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"}
	cfg.VerifiedPublicKeyCallback = func(meta gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
		if c == nil {
			return nil, errNotAuthed
		}
		// Register first, then check: a lock that the check does not see
		// comes after it, and its EndUser finds this connection.
		name := identity.CanonicalName(meta.User())
		c.addName(name)
		j.register(c, name)
		w, err := j.checkCert(meta.User(), meta.RemoteAddr(), key)
		if err != nil {
			j.log().Info("jump host login refused", "user", name, "remote", meta.RemoteAddr().String(), "err", err)
			return nil, &gossh.BannerError{Err: err, Message: "tunnel: " + err.Error() + "\r\n"}
		}
		expiry := min(certTime(w.cert.ValidBefore).Sub(j.now()), maxTimer)
		c.authenticated(w, j.idleTimeout(), expiry)
		j.log().Info("jump host login", "user", w.user.Name, "serial", w.serial, "remote", meta.RemoteAddr().String())
		return &gossh.Permissions{}, nil
	}
	return cfg
}

// maxTimer bounds timers set from certificate times.
const maxTimer = 100 * 365 * 24 * time.Hour

// certTime converts a certificate's ValidBefore or ValidAfter.
func certTime(t uint64) time.Time {
	if t > math.MaxInt64 {
		return time.Unix(math.MaxInt64, 0) // "forever"
	}
	return time.Unix(int64(t), 0)
}

// screen is the cheap check of an offered key, before the client proves
// it holds it: a user certificate from this cluster's user CA. The full
// check, with refusals the user is shown, runs on the key proved.
func (j *Server) screen(key gossh.PublicKey) bool {
	cert, ok := key.(*gossh.Certificate)
	return ok && cert.CertType == gossh.UserCert && j.isUserCA(cert.SignatureKey)
}

// checker is the cluster's one SSH user-certificate check, at this jump
// host's clock.
func (j *Server) checker() *sshcert.Checker {
	return &sshcert.Checker{UserCAs: j.CA.SSHUserCAs, Clock: j.now}
}

func (j *Server) isUserCA(auth gossh.PublicKey) bool {
	return j.checker().IsUserCA(auth)
}

// checkCert checks key as the login certificate of the SSH user login,
// connecting from remote, now: the certificate (CA, validity, key id:
// a user and no session, the user it names is login), its record (known,
// not revoked, that user's) and the user (exists, not locked). It runs at
// login and again for every new channel.
func (j *Server) checkCert(login string, remote net.Addr, key gossh.PublicKey) (*who, error) {
	// The principals are the logins on the nodes, checked by the nodes;
	// here any principal will do.
	c, err := j.checker().Check(key, "", remote)
	switch {
	case errors.Is(err, sshcert.ErrNotCertificate), errors.Is(err, sshcert.ErrNotUserCert):
		return nil, errNotCert
	case errors.Is(err, sshcert.ErrUntrustedCA), errors.Is(err, sshcert.ErrSignedByCert):
		return nil, errNotFromCluster
	case errors.Is(err, sshcert.ErrNoPrincipals):
		return nil, errNoPrincipals
	case errors.Is(err, sshcert.ErrSourceAddress):
		return nil, err
	case errors.Is(err, sshcert.ErrKeyID):
		return nil, fmt.Errorf("certificate refused: %w (run tunnel login)", err)
	case err != nil:
		return nil, fmt.Errorf("%w (run tunnel login)", err)
	case c.KeyID.Session != "":
		return nil, errSessionCert
	case c.KeyID.User != identity.CanonicalName(login):
		return nil, fmt.Errorf("connect to the jump host as your tunnel user (%s@gateway)", c.KeyID.User)
	}
	cert, id := c.Certificate, c.KeyID
	ctx := context.Background()
	serial := certs.SSHSerialHex(cert)
	rec, err := j.Store.GetCertificate(ctx, store.CertSSHUser, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errUnknownSerial
	case err != nil:
		j.log().Warn("jump host: read certificate record", "serial", serial, "err", err)
		if errors.Is(err, store.ErrUnavailable) {
			return nil, errNoStore
		}
		return nil, errStoreDown
	case !rec.RevokedAt.IsZero():
		return nil, errRevoked
	case rec.Subject != id.User || rec.SubjectKind != identity.User:
		return nil, errUnknownSerial
	}
	u, err := j.Store.GetUser(ctx, id.User)
	if err != nil || u.Locked {
		return nil, errLocked
	}
	return &who{login: login, user: u, cert: cert, serial: serial}, nil
}
