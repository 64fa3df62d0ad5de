package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Session is what the gateway granted: looked up for each connection by the
// session id in the certificate's key id.
type Session struct {
	ID    string
	User  string // the engineer
	Login string // the OS login granted
	// Logins, when set, are several logins granted (a jump-host session,
	// where the login is chosen inside the end-to-end SSH connection).
	Logins   []string
	Deadline time.Time
	// IdleTimeout ends the connection after this long without input from
	// the client or output to it; zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// AllowPortForwarding allows direct-tcpip channels (ssh -L); the
	// certificate must also carry permit-port-forwarding.
	AllowPortForwarding bool
	// AllowAgentForwarding allows ssh -A; the certificate must also carry
	// permit-agent-forwarding.
	AllowAgentForwarding bool
}

// DefaultIdleTimeout is the idle timeout of a Session that sets none.
const DefaultIdleTimeout = 15 * time.Minute

// DefaultHandshakeTimeout is how long a connection may take to
// authenticate when Config.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 30 * time.Second

// Recorder receives a session's recording. Offsets are from the session's
// start. Calls come from one goroutine at a time.
type Recorder interface {
	// Output records bytes sent to the client.
	Output(t time.Duration, data []byte)
	// Resize records a window change.
	Resize(t time.Duration, w, h int)
	// Close ends the recording.
	Close() error
}

// Config configures a Server. The zero value of each optional field means
// its default.
type Config struct {
	// HostSigner is the host key carrying its host certificate
	// (ssh.NewCertSigner). Required.
	HostSigner gossh.Signer
	// UserCAs returns the trusted user CAs; it is called for every key, so
	// a rotation takes effect at once. Required.
	UserCAs func() []gossh.PublicKey
	// LookupSession returns the active session named in the certificate's
	// key id, or an error whose message is shown to the user (for example
	// "session revoked by an administrator"). It is called only for a key
	// the client has proved it holds. Required.
	LookupSession func(ctx context.Context, sessionID string, serial uint64) (Session, error)
	// SessionFromConn accepts a certificate whose key id names a user but
	// no session (the login certificate plain OpenSSH presents through the
	// gateway's jump host): LookupSession is then called with an empty id
	// and must return the session of the connection itself, whose user must
	// be the certificate's.
	SessionFromConn bool
	// IsRevoked, if set, reports whether a certificate serial is revoked.
	IsRevoked func(serial uint64) bool
	// Record, if set, returns a recorder for a PTY or exec session; width,
	// height and term are the terminal's (80x24 and "" without a PTY). If
	// it fails, the session is refused: nothing runs unrecorded.
	Record func(s Session, width, height int, term string) (Recorder, error)
	// EnvAllow lists the environment variables a client may set; a
	// trailing "*" matches any suffix. Nil means LANG, LC_* and TERM.
	EnvAllow []string
	// Clock returns the current time for certificate and deadline checks;
	// nil means time.Now.
	Clock func() time.Time
	// Log receives operational logs; nil discards them.
	Log *slog.Logger
	// HandshakeTimeout bounds the time to authenticate; zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// SFTPCommand runs an sftp server on stdin and stdout as the login
	// user, for logins other than the agent's own user (for which sftp is
	// served in-process). Nil means OpenSSH's sftp-server where installed.
	SFTPCommand []string
}

// DefaultEnvAllow is the environment a client may set by default.
var DefaultEnvAllow = []string{"LANG", "LC_*", "TERM"}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("sshd: server closed")

// Server is the agent's SSH endpoint. Its methods are safe for concurrent
// use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	clock    func() time.Time
	envAllow []string
	osUsers  osUsers

	mu        sync.Mutex // guards the fields below
	closed    bool
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	ended     map[string]time.Time // session id → when EndSession was called

	wg sync.WaitGroup // ServeConn and Serve calls
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.HostSigner == nil {
		return nil, errors.New("sshd: Config.HostSigner is required")
	}
	if c, ok := cfg.HostSigner.PublicKey().(*gossh.Certificate); !ok || c.CertType != gossh.HostCert {
		return nil, errors.New("sshd: Config.HostSigner must carry a host certificate (ssh.NewCertSigner)")
	}
	if cfg.UserCAs == nil {
		return nil, errors.New("sshd: Config.UserCAs is required")
	}
	if cfg.LookupSession == nil {
		return nil, errors.New("sshd: Config.LookupSession is required")
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Log,
		clock:     cfg.Clock,
		envAllow:  cfg.EnvAllow,
		osUsers:   systemUsers{},
		conns:     map[*conn]struct{}{},
		listeners: map[net.Listener]struct{}{},
		ended:     map[string]time.Time{},
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.envAllow == nil {
		s.envAllow = DefaultEnvAllow
	}
	if s.cfg.HandshakeTimeout <= 0 {
		s.cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return s, nil
}

// ServeConn runs one SSH connection on c and returns when it ends. It closes
// c. Cancelling ctx ends the connection.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.serveConn(ctx, c)
}

// Serve accepts connections on ln and serves each until ctx ends or Close
// is called; it closes ln. It returns ErrServerClosed after Close and
// ctx.Err() when ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		_ = ln.Close()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			switch {
			case closed:
				return ErrServerClosed
			case ctx.Err() != nil:
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("sshd: accept: %w", err)
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

// EndSession ends every live connection of session id: each channel gets
// reason on its stderr, then the connection closes. New connections for
// the session are refused from then on, whatever LookupSession says.
func (s *Server) EndSession(id, reason string) {
	if reason == "" {
		reason = "session ended by an administrator"
	}
	cause := &EndError{Kind: ErrSessionEnded, Message: reason}
	now := s.clock()
	s.mu.Lock()
	for sid, at := range s.ended {
		if now.Sub(at) > 24*time.Hour {
			delete(s.ended, sid)
		}
	}
	s.ended[id] = now
	var victims []*conn
	for c := range s.conns {
		if c.sessionID() == id {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.end(cause)
	}
}

// Close ends every connection and listener and waits for them. It is safe
// to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	for ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	cause := &EndError{Kind: ErrServerClosed, Message: "the agent is shutting down"}
	for _, c := range conns {
		c.end(cause)
	}
	s.wg.Wait()
}

func (s *Server) sessionEnded(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ended[id]
	return ok
}

func (s *Server) track(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// sshConfig is the algorithm policy: modern key exchange, AEAD ciphers and
// encrypt-then-MAC only.
func sshConfig() *gossh.ServerConfig {
	return &gossh.ServerConfig{
		Config: gossh.Config{
			KeyExchanges: []string{
				gossh.KeyExchangeMLKEM768X25519,
				gossh.KeyExchangeCurve25519,
				gossh.KeyExchangeECDHP256,
				gossh.KeyExchangeECDHP384,
			},
			Ciphers: []string{
				gossh.CipherChaCha20Poly1305,
				gossh.CipherAES256GCM,
				gossh.CipherAES128GCM,
			},
			MACs: []string{gossh.HMACSHA256ETM, gossh.HMACSHA512ETM},
		},
		PublicKeyAuthAlgorithms: []string{
			gossh.KeyAlgoED25519,
			gossh.KeyAlgoSKED25519,
			gossh.KeyAlgoECDSA256,
			gossh.KeyAlgoSKECDSA256,
			gossh.KeyAlgoECDSA384,
			gossh.KeyAlgoECDSA521,
			gossh.KeyAlgoRSASHA512,
			gossh.KeyAlgoRSASHA256,
		},
		MaxAuthTries:  6,
		ServerVersion: "SSH-2.0-tunnel-agent",
	}
}

// envAllowed reports whether the client may set the variable name.
func envAllowed(allow []string, name string) bool {
	return slices.ContainsFunc(allow, func(p string) bool {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			return len(name) > len(prefix) && strings.HasPrefix(name, prefix)
		}
		return p == name
	})
}
