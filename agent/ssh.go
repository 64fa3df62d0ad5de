package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/agent/internal/sshd"
	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// streamSessionKey carries, in a connection's context, the session the
// gateway vouched for in the stream's header.
type streamSessionKey struct{}

// newSSHServer builds the node's SSH endpoint from the identity. Its host
// key is the identity's, which renewals keep; the host certificate it
// presents is the identity's at each handshake (hostCert), so that a
// renewed one, or one of a new host CA, is served without a restart. The
// user CAs it trusts are the identity's at each key offered (userCAs).
func (a *Agent) newSSHServer() (*sshd.Server, error) {
	hk, err := a.identity().hostKey()
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromSigner(hk)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	hc := &hostCert{a: a}
	if _, err := hc.parse(a.identity()); err != nil {
		return nil, err
	}
	hostSigner := &certs.CertSigner{Key: signer, Cert: hc.current}
	if c, ok := hostSigner.PublicKey().(*ssh.Certificate); !ok || c.CertType != ssh.HostCert {
		return nil, errors.New("host certificate: not a host certificate of the agent's host key: enrol again with a new join token")
	}
	// Drop-ins of sessions that ended while the agent was down go first.
	a.sudo().cleanStale()
	return sshd.New(sshd.Config{
		HostSigner:    hostSigner,
		UserCAs:       a.userCAs,
		LookupSession: a.lookupSession,
		// Plain OpenSSH through the jump host presents the login
		// certificate; the gateway vouches for the session in the stream.
		SessionFromConn: true,
		Record:          a.record,
		Log:             a.log.With("component", "sshd"),
	})
}

// hostCert is the host certificate of the agent's identity now, parsed
// once per identity.
type hostCert struct {
	a    *Agent
	mu   sync.Mutex
	id   *Identity
	cert *ssh.Certificate
}

// current returns the certificate of the current identity; if it does not
// parse, the last one that did.
func (h *hostCert) current() *ssh.Certificate {
	id := h.a.identity()
	h.mu.Lock()
	if h.id == id {
		defer h.mu.Unlock()
		return h.cert
	}
	last := h.cert
	h.mu.Unlock()
	c, err := h.parse(id)
	if err != nil {
		h.a.log.Warn("the renewed SSH host certificate cannot be read; presenting the previous one", "err", err)
		return last
	}
	return c
}

// parse reads id's host certificate and makes it the current one.
func (h *hostCert) parse(id *Identity) (*ssh.Certificate, error) {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(id.HostCert))
	if err != nil {
		return nil, fmt.Errorf("host certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("host certificate: not a certificate")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.id, h.cert = id, cert
	return cert, nil
}

func (a *Agent) userCAs() []ssh.PublicKey {
	var out []ssh.PublicKey
	for _, line := range a.identity().UserCAs {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// lookupSession accepts the session the gateway named in the stream's
// header; a certificate made for a session must be for that one.
func (a *Agent) lookupSession(ctx context.Context, sessionID string, _ uint64) (sshd.Session, error) {
	h, ok := ctx.Value(streamSessionKey{}).(wire.Header)
	if !ok || h.Session == "" {
		return sshd.Session{}, errors.New("this connection did not come through a session")
	}
	if sessionID != "" && sessionID != h.Session {
		return sshd.Session{}, errors.New("this certificate belongs to another session: run tunnel ssh again")
	}
	user := ""
	if u, err := url.Parse(h.Caller); err == nil {
		if id, err := identity.ParseURI(u); err == nil {
			user = id.Name
		}
	}
	s := sshd.Session{ID: h.Session, User: user, Deadline: time.Unix(h.Deadline, 0), IdleTimeout: time.Duration(h.Idle) * time.Second}
	for _, p := range strings.Split(h.Permit, ",") {
		switch p {
		case "port-forwarding":
			s.AllowPortForwarding = true
		case "agent-forwarding":
			s.AllowAgentForwarding = true
		}
	}
	if logins := strings.Split(h.Login, ","); len(logins) > 1 {
		s.Logins = logins
	} else {
		s.Login = h.Login
	}
	if err := a.grantSudo(ctx, h); err != nil {
		return sshd.Session{}, err
	}
	return s, nil
}

// sudoHoldKey carries, in a connection's context, the sudo grant of the
// connection (sudoHold), released when the connection ends.
type sudoHoldKey struct{}

// sudoHold is the sudo grant one connection holds.
type sudoHold struct {
	mu      sync.Mutex
	release func()
}

func (h *sudoHold) done() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.release != nil {
		h.release()
		h.release = nil
	}
}

// sudoersEnv names the environment variable that overrides the agent
// file's sudoers_dir.
const sudoersEnv = "TUNNEL_SUDOERS_DIR"

// sudo returns the agent's sudoers manager: its directory is
// TUNNEL_SUDOERS_DIR, the file's sudoers_dir, or DefaultSudoersDir.
func (a *Agent) sudo() *sudoers {
	a.sudoOnce.Do(func() {
		dir := os.Getenv(sudoersEnv)
		if dir == "" && a.cfg.File != nil {
			dir = a.cfg.File.SudoersDir
		}
		a.sudoers = newSudoers(dir, a.log.With("component", "sudoers"))
	})
	return a.sudoers
}

// grantSudo puts the sudoers drop-in of the session in place when the
// gateway's header allows sudo (a role with --sudo), once the user has
// authenticated; the connection releases it when it ends. A jump-host
// session (several logins, chosen inside the SSH connection) gets no sudo.
func (a *Agent) grantSudo(ctx context.Context, h wire.Header) error {
	hold, _ := ctx.Value(sudoHoldKey{}).(*sudoHold)
	if hold == nil || !slices.Contains(strings.Split(h.Permit, ","), "sudo") || strings.Contains(h.Login, ",") {
		return nil
	}
	hold.mu.Lock()
	defer hold.mu.Unlock()
	if hold.release != nil {
		return nil
	}
	release, err := a.sudo().grant(h.Session, h.Login)
	if err != nil {
		a.log.Error("give sudo for a session", "session", h.Session, "login", h.Login, "err", err)
		return fmt.Errorf("node %s could not give login %s sudo for this session: ask its operator to check the agent's log", a.identity().Name, h.Login)
	}
	hold.release = release
	return nil
}

// serveSSH hands a delivered stream to the SSH endpoint.
func (a *Agent) serveSSH(ctx context.Context, st *quic.Stream, h wire.Header) {
	if a.sshd == nil {
		refuse(st, wire.StatusUnavailable, fmt.Sprintf("node %s runs no SSH endpoint", a.identity().Name))
		return
	}
	if h.Session == "" || h.Login == "" || h.Deadline == 0 {
		refuse(st, wire.StatusBadRequest, "an SSH stream needs a session")
		return
	}
	if err := wire.WriteReply(st, wire.Reply{Status: wire.StatusOK}); err != nil {
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return
	}
	ctx = context.WithValue(ctx, streamSessionKey{}, h)
	hold := &sudoHold{}
	defer hold.done() // the session's sudo ends with its last connection
	ctx = context.WithValue(ctx, sudoHoldKey{}, hold)
	a.sshd.ServeConn(ctx, transport.StreamConn(st, transport.StreamAddr(a.identity().Name), transport.StreamAddr(h.Caller)))
}

// endSession carries out the gateway's order to end a session.
func (a *Agent) endSession(m wire.Control) {
	if a.sshd != nil && m.Session != "" {
		reason := m.Message
		if strings.TrimSpace(reason) == "" {
			reason = "session ended by the gateway"
		}
		a.sshd.EndSession(m.Session, reason)
	}
}
