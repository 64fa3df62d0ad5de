// Package sshclient is the `tunnel ssh` client: it reaches a node's SSH
// endpoint through the gateway (one QUIC stream, authorised by a bastion
// session), verifies the node's host certificate against the cluster's host
// CA (no trust on first use), authenticates with the session's certificate,
// and runs a shell with a PTY or a command, passing the remote exit status
// back.
package sshclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Config says how to reach one node.
type Config struct {
	// Opener opens streams to the gateway (a transport.LazyConn).
	Opener transport.StreamOpener
	Node   string
	Login  string
	// SessionID is the bastion session the stream belongs to.
	SessionID string
	// Signer holds the key and the session's certificate.
	Signer ssh.Signer
	// HostCAs are the cluster's SSH host CAs.
	HostCAs []ssh.PublicKey
}

// Dial opens the stream and the SSH connection.
func Dial(ctx context.Context, cfg Config) (*ssh.Client, error) {
	st, err := cfg.Opener.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindDial, Target: cfg.Node + "/" + api.SSHService, Session: cfg.SessionID}); err != nil {
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return nil, err
	}
	_ = st.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
	rep, err := wire.ReadReply(st)
	_ = st.SetReadDeadline(time.Time{})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return nil, fmt.Errorf("reach %s: %w", cfg.Node, err)
	}
	return newClient(transport.StreamConn(st, transport.StreamAddr("local"), transport.StreamAddr(cfg.Node)), cfg)
}

// newClient runs the SSH handshake on conn: the node must present a host
// certificate from one of cfg.HostCAs naming cfg.Node (no other key, no
// trust on first use), and the client logs in with the session's
// certificate. conn is closed on failure.
func newClient(conn net.Conn, cfg Config) (*ssh.Client, error) {
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			for _, ca := range cfg.HostCAs {
				if string(ca.Marshal()) == string(auth.Marshal()) {
					return true
				}
			}
			return false
		},
	}
	sc := &ssh.ClientConfig{
		User:              cfg.Login,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback:   checker.CheckHostKey,
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01},
		Timeout:           15 * time.Second,
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, net.JoinHostPort(cfg.Node, "22"), sc)
	if err != nil {
		conn.Close()
		return nil, explain(cfg, err)
	}
	return ssh.NewClient(&sessionConn{Conn: c, deadline: certDeadline(cfg.Signer)}, chans, reqs), nil
}

// sessionConn is the client's SSH connection with the session's deadline,
// so that Run can tell a session cut at its deadline from one cut for
// another reason.
type sessionConn struct {
	ssh.Conn
	deadline time.Time // zero if unknown
}

// certDeadline is the expiry of the session certificate s holds: the
// session's deadline, itself capped by the login's expiry.
func certDeadline(s ssh.Signer) time.Time {
	if s == nil {
		return time.Time{}
	}
	cert, ok := s.PublicKey().(*ssh.Certificate)
	if !ok || cert.ValidBefore == 0 || cert.ValidBefore > math.MaxInt64 {
		return time.Time{}
	}
	return time.Unix(int64(cert.ValidBefore), 0)
}

func explain(cfg Config, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unable to authenticate"):
		return fmt.Errorf("%s refused login %q with this session's certificate (is %q one of your logins? see tunnel status)", cfg.Node, cfg.Login, cfg.Login)
	case strings.Contains(msg, "host key"), strings.Contains(msg, "certificate"), strings.Contains(msg, "no authorities"):
		return fmt.Errorf("%s did not prove it is %s (its host certificate is not from this cluster): %w", cfg.Node, cfg.Node, err)
	}
	return fmt.Errorf("ssh to %s: %w", cfg.Node, err)
}

// ExitError carries the remote command's exit status.
type ExitError struct{ Code int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("remote command exited with status %d", e.Code)
}

// Run runs command (a shell when empty) on the client's connection, with a
// PTY when stdin is a terminal, and returns an *ExitError for a non-zero
// exit status. A session ended by the server (deadline, revocation) has
// already said why on stderr.
func Run(ctx context.Context, c *ssh.Client, command []string, stdin *os.File, stdout, stderr io.Writer) error {
	s, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr
	fd := int(stdin.Fd())
	interactive := term.IsTerminal(fd) && len(command) == 0
	if term.IsTerminal(fd) {
		w, h, err := term.GetSize(fd)
		if err != nil {
			w, h = 80, 24
		}
		t := os.Getenv("TERM")
		if t == "" {
			t = "xterm-256color"
		}
		if err := s.RequestPty(t, h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return fmt.Errorf("request a terminal: %w", err)
		}
		old, err := term.MakeRaw(fd)
		if err == nil {
			defer term.Restore(fd, old)
		}
		stop := watchResize(fd, s)
		defer stop()
	}
	if interactive {
		err = s.Shell()
		if err == nil {
			err = s.Wait()
		}
	} else {
		err = s.Run(strings.Join(command, " "))
	}
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return &ExitError{Code: ee.ExitStatus()}
	case errors.Is(err, io.EOF), strings.Contains(err.Error(), "without exit status"):
		return endReason(c, time.Now())
	}
	return err
}

// Reasons a session was cut, as the node and the gateway say them.
const (
	reasonRevoked = "access revoked by an administrator"
	// expirySlack allows for the difference between this machine's clock
	// and the gateway's, which set the deadline.
	expirySlack = 10 * time.Second
	// closeWait bounds the wait for the connection's end, once its session
	// channel closed without an exit status.
	closeWait = 2 * time.Second
)

// endReason says why a session ended without an exit status: cut at its
// deadline (which is never later than the login's expiry), revoked, or
// closed for a reason this side cannot tell.
func endReason(c *ssh.Client, now time.Time) error {
	var deadline time.Time
	if sc, ok := c.Conn.(*sessionConn); ok {
		deadline = sc.deadline
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Wait() }()
	var cause error
	select {
	case cause = <-closed:
	case <-time.After(closeWait):
	}
	var ae *quic.ApplicationError
	if errors.As(cause, &ae) && ae.Remote {
		switch {
		case ae.ErrorCode == transport.CodeRevoked:
			return errors.New(reasonRevoked)
		case ae.ErrorCode == transport.CodeUnauthorized && strings.Contains(ae.ErrorMessage, "expired"):
			return errors.New("session expired: your login expired (run tunnel login, then tunnel ssh again)")
		}
	}
	if !deadline.IsZero() && !now.Before(deadline.Add(-expirySlack)) {
		return fmt.Errorf("session expired at %s UTC: run tunnel ssh again for a new session", deadline.UTC().Format("15:04:05"))
	}
	if cause != nil && !errors.Is(cause, io.EOF) {
		return fmt.Errorf("the connection closed before the command finished: %w", cause)
	}
	return errors.New("the connection closed before the command finished")
}

// watchResize forwards terminal size changes (SIGWINCH) to the session.
func watchResize(fd int, s *ssh.Session) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-ch:
				if w, h, err := term.GetSize(fd); err == nil {
					_ = s.WindowChange(h, w)
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		<-exited
	}
}
