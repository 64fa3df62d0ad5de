// Package jumphost is the gateway's SSH jump host, so that plain OpenSSH
// works through the bastion: ssh -J alice@gateway:2222 ubuntu@web-1, scp
// -J, sftp -J, rsync -e 'ssh -J ...'.
//
// A client authenticates with the SSH certificate from `tunnel login`
// (its key id names the user; the user must exist, not be locked, and the
// certificate's serial must be on record and not revoked). The jump host
// serves only direct-tcpip channels to NODE:22 (NODE or NODE.CLUSTER) that
// the user's roles allow: for each one it opens a bastion session (deadline:
// the certificate's expiry, capped by the role), listed, timed and
// revocable like any other, and carries the channel over the node agent's
// tunnel to its SSH endpoint. The SSH connection to the node is end to end:
// the jump host never sees inside it.
package jumphost

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/relay"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// Server is the jump host. Fill the fields, then Serve.
type Server struct {
	Store    store.Store
	CA       *certs.Authority
	Sessions *sessions.Manager
	Relay    *relay.Server
	// Names the gateway is reached by (its host certificate's principals).
	Names []string
	Clock func() time.Time
	Log   *slog.Logger

	mu       sync.Mutex // guards verified
	verified map[string]*who

	srv  *gliderssh.Server
	wg   sync.WaitGroup
	once sync.Once
}

// who is the identity proved on one SSH connection.
type who struct {
	user   store.User
	cert   *gossh.Certificate
	serial string
}

func (j *Server) now() time.Time {
	if j.Clock == nil {
		return time.Now()
	}
	return j.Clock()
}

func (j *Server) log() *slog.Logger {
	if j.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return j.Log
}

// Serve serves the jump host on ln until Close.
func (j *Server) Serve(ln net.Listener) error {
	signer, err := j.hostSigner()
	if err != nil {
		return err
	}
	j.verified = map[string]*who{}
	j.srv = &gliderssh.Server{
		HostSigners: []gliderssh.Signer{signer},
		// Offered keys are only screened here; the grant is made in the
		// verified-key callback for the key the client signed with.
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			_, err := j.checkCert(ctx.User(), key)
			return err == nil
		},
		ServerConfigCallback: func(ctx gliderssh.Context) *gossh.ServerConfig {
			cfg := &gossh.ServerConfig{}
			cfg.KeyExchanges = []string{"curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"}
			cfg.Ciphers = []string{"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"}
			cfg.MACs = []string{"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"}
			cfg.VerifiedPublicKeyCallback = func(meta gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
				w, err := j.checkCert(meta.User(), key)
				if err != nil {
					return nil, &gossh.BannerError{Err: err, Message: "tunnel: " + err.Error() + "\r\n"}
				}
				j.mu.Lock()
				j.verified[hex.EncodeToString(meta.SessionID())] = w
				j.mu.Unlock()
				return &gossh.Permissions{}, nil
			}
			return cfg
		},
		ConnCallback: func(ctx gliderssh.Context, c net.Conn) net.Conn {
			j.wg.Add(1)
			go func() {
				defer j.wg.Done()
				<-ctx.Done()
				j.mu.Lock()
				delete(j.verified, ctx.SessionID())
				j.mu.Unlock()
			}()
			return c
		},
		ChannelHandlers: map[string]gliderssh.ChannelHandler{"direct-tcpip": j.directTCPIP},
		RequestHandlers: map[string]gliderssh.RequestHandler{},
	}
	err = j.srv.Serve(ln)
	if errors.Is(err, gliderssh.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the jump host and closes its connections. Safe twice.
func (j *Server) Close() error {
	var err error
	j.once.Do(func() {
		if j.srv != nil {
			err = j.srv.Close()
		}
		j.wg.Wait()
	})
	return err
}

func (j *Server) hostSigner() (gliderssh.Signer, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	cert, err := j.CA.IssueSSHHost(certs.SSHHostRequest{Host: "gateway", Principals: j.Names, PublicKey: sshPub})
	if err != nil {
		return nil, fmt.Errorf("jump host certificate: %w", err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	return gossh.NewCertSigner(cert, s)
}

// checkCert checks a key as the login certificate of user.
func (j *Server) checkCert(user string, key gossh.PublicKey) (*who, error) {
	cert, ok := key.(*gossh.Certificate)
	if !ok || cert.CertType != gossh.UserCert {
		return nil, errors.New("log in with your tunnel certificate: run tunnel login, then tunnel config ssh")
	}
	checker := &gossh.CertChecker{
		Clock: j.now,
		IsUserAuthority: func(auth gossh.PublicKey) bool {
			for _, ca := range j.CA.SSHUserCAs() {
				if string(ca.Marshal()) == string(auth.Marshal()) {
					return true
				}
			}
			return false
		},
	}
	if len(cert.ValidPrincipals) == 0 {
		return nil, errors.New("certificate without principals refused")
	}
	if err := checker.CheckCert(cert.ValidPrincipals[0], cert); err != nil {
		return nil, fmt.Errorf("certificate refused: %v (run tunnel login)", err)
	}
	name := ""
	for _, f := range strings.Fields(cert.KeyId) {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			name = v
		}
	}
	if name == "" || name != identity.CanonicalName(user) {
		return nil, fmt.Errorf("connect to the jump host as your tunnel user (%s@gateway)", name)
	}
	ctx := context.Background()
	serial := certs.SSHSerialHex(cert)
	rec, err := j.Store.GetCertificate(ctx, store.CertSSHUser, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errors.New("this gateway has no record of your certificate: run tunnel login")
	case err != nil:
		return nil, errors.New("the gateway cannot check your certificate right now")
	case !rec.RevokedAt.IsZero():
		return nil, errors.New("your certificate was revoked by an administrator")
	}
	u, err := j.Store.GetUser(ctx, name)
	if err != nil || u.Locked {
		return nil, errors.New("your account is locked or gone: ask an administrator")
	}
	return &who{user: u, cert: cert, serial: serial}, nil
}

// directTCPIP carries one channel to a node's SSH endpoint.
func (j *Server) directTCPIP(_ *gliderssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	var dest struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := gossh.Unmarshal(nc.ExtraData(), &dest); err != nil {
		_ = nc.Reject(gossh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	j.mu.Lock()
	w := j.verified[hex.EncodeToString(conn.SessionID())]
	j.mu.Unlock()
	if w == nil {
		_ = nc.Reject(gossh.Prohibited, "not authenticated")
		return
	}
	node := strings.TrimSuffix(identity.CanonicalName(dest.Host), "."+j.CA.Cluster())
	if identity.ValidateName("node", node) != nil || dest.Port != 22 {
		_ = nc.Reject(gossh.Prohibited, fmt.Sprintf("the jump host only reaches NODE:22 (asked for %s:%d)", dest.Host, dest.Port))
		return
	}
	src := hostOf(conn.RemoteAddr())
	g, err := j.Sessions.GrantOn(ctx, w.user, node)
	if err != nil {
		_ = nc.Reject(gossh.ConnectionFailed, "the gateway cannot check your roles right now")
		return
	}
	logins := slices.DeleteFunc(slices.Clone(g.Logins), func(l string) bool { return !slices.Contains(w.cert.ValidPrincipals, l) })
	if len(logins) == 0 {
		j.log().Info("jump refused", "user", w.user.Name, "node", node)
		_ = nc.Reject(gossh.Prohibited, fmt.Sprintf("your roles do not allow %s", node))
		return
	}
	sess, err := j.Sessions.OpenForJump(ctx, w.user, node, logins, w.serial, time.Unix(int64(w.cert.ValidBefore), 0), src)
	if err != nil {
		_ = nc.Reject(gossh.Prohibited, err.Error())
		return
	}
	st, err := j.Relay.OpenSSH(ctx, w.user.Name, sess, logins, src)
	if err != nil {
		j.Sessions.Closed(context.Background(), sess.ID)
		_ = nc.Reject(gossh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		st.Done(0, 0)
		return
	}
	go gossh.DiscardRequests(reqs)
	res := transport.Splice(channel{ch}, transport.Stream{Stream: st.Stream})
	st.Done(res.AToB, res.BToA)
}

// channel adapts an SSH channel to transport.Endpoint.
type channel struct{ gossh.Channel }

func (c channel) Abort() { _ = c.Channel.Close() }

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}
