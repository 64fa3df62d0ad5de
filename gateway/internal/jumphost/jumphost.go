// Package jumphost is the gateway's SSH jump host, so that plain OpenSSH
// works through the bastion: ssh -J alice@gateway:2222 ubuntu@web-1, scp
// -J, sftp -J, rsync -e 'ssh -J ...'.
//
// A client authenticates with the SSH certificate from `tunnel login`
// (its key id names the user and no session: session certificates are for
// tunnel ssh only; the user must exist, not be locked, and the
// certificate's serial must be on record and not revoked). The jump host
// serves only direct-tcpip channels to NODE:22 (NODE or NODE.CLUSTER) that
// the user's roles allow. Every new channel checks the certificate and the
// user again, so a connection held open (OpenSSH ControlMaster) opens
// nothing once the user is locked or the certificate revoked, also after
// an unlock. For each channel it opens a bastion session (deadline: the
// certificate's expiry, capped by the role), listed, timed and revocable
// like any other, and carries the channel over the node agent's tunnel to
// its SSH endpoint. The SSH connection to the node is end to end: the jump
// host never sees inside it.
//
// Connection lifecycle (one goroutine per connection, owned by Serve):
//
//	accept ──▶ handshake (HandshakeTimeout) ──▶ authenticated ──▶ closed
//	              │ refused / silent               │ idle without channels (IdleTimeout),
//	              └──────────────▶ closed          │ certificate expired, user locked or
//	                                               └─ removed (EndUser), Close
//
// A panic while serving one connection or one channel is recovered at its
// boundary (package panics): that connection closes, the gateway goes on.
package jumphost

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/relay"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Defaults of the Server's timeouts.
const (
	// DefaultHandshakeTimeout bounds the time from the TCP connection to a
	// successful authentication.
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultIdleTimeout closes an authenticated connection that has had
	// no channel open for this long.
	DefaultIdleTimeout = 15 * time.Minute
	// DefaultMaxChannels bounds the channels (each a session to a node)
	// one connection carries at once: OpenSSH multiplexes several over a
	// ControlMaster, but one connection must not take a node's capacity.
	DefaultMaxChannels = 32
)

// revokeGrace is how long a revoked user's connection stays open so that
// the node's message ("access revoked by an administrator") reaches the
// user through it before the jump host closes it.
const revokeGrace = 2 * time.Second

// Server is the jump host. Fill the fields, then Serve. The zero value of
// each optional field means its default.
type Server struct {
	Store    store.Store
	CA       *certs.Authority
	Sessions *sessions.Manager
	Relay    *relay.Server
	// Names the gateway is reached by (its host certificate's principals).
	Names []string
	Clock func() time.Time
	Log   *slog.Logger
	// HandshakeTimeout: a connection not authenticated this long after it
	// was accepted is closed. Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout: an authenticated connection without any open channel
	// for this long is closed. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxChannels: the most direct-tcpip channels one connection carries
	// at once; more are refused with a sentence. Zero means
	// DefaultMaxChannels.
	MaxChannels int

	// open carries a granted channel to the node; nil means through Relay.
	// Tests replace it.
	open opener

	mu           sync.Mutex // guards everything below
	ln           net.Listener
	srv          *gliderssh.Server
	conns        map[*conn]struct{}
	users        map[string]map[*conn]struct{} // authenticated connections by user
	closed       bool
	removeKiller func()

	wg sync.WaitGroup // connection goroutines
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

func (j *Server) handshakeTimeout() time.Duration {
	if j.HandshakeTimeout <= 0 {
		return DefaultHandshakeTimeout
	}
	return j.HandshakeTimeout
}

func (j *Server) idleTimeout() time.Duration {
	if j.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return j.IdleTimeout
}

func (j *Server) maxChannels() int {
	if j.MaxChannels <= 0 {
		return DefaultMaxChannels
	}
	return j.MaxChannels
}

// Serve serves the jump host on ln until Close; it returns nil after
// Close.
func (j *Server) Serve(ln net.Listener) error {
	signer, err := j.hostSigner()
	if err != nil {
		ln.Close()
		return err
	}
	srv := &gliderssh.Server{
		HostSigners: []gliderssh.Signer{signer},
		// Offered keys are only screened here; the full check and the
		// grant are made in the verified-key callback, for the key the
		// client signed with, whose refusals the user is shown.
		PublicKeyHandler: func(_ gliderssh.Context, key gliderssh.PublicKey) bool {
			return j.screen(key)
		},
		ServerConfigCallback: j.serverConfig,
		ConnCallback: func(ctx gliderssh.Context, nc net.Conn) net.Conn {
			// nc is the *conn Serve handed to HandleConn: keep it in the
			// context, where the channel handlers find it.
			ctx.SetValue(connKey{}, nc)
			return nc
		},
		ChannelHandlers: map[string]gliderssh.ChannelHandler{"direct-tcpip": j.directTCPIP},
		RequestHandlers: map[string]gliderssh.RequestHandler{},
	}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		ln.Close()
		return nil
	}
	j.ln, j.srv = ln, srv
	if j.Sessions != nil {
		j.removeKiller = j.Sessions.AddKiller(j)
	}
	j.mu.Unlock()

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if j.isClosed() {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// Out of descriptors, say: wait, do not spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				j.log().Warn("jump host accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("SSH jump host: %w", err)
		}
		delay = 0
		c := j.track(nc)
		if c == nil {
			nc.Close()
			return nil
		}
		go j.serveConn(c)
	}
}

// serveConn runs gliderlabs' connection loop (handshake, then channels)
// for one connection, and forgets the connection once it is closed. It is
// the connection's boundary: a panic ends this connection only.
func (j *Server) serveConn(c *conn) {
	defer j.wg.Done()
	defer j.forget(c)
	defer panics.Recover(j.log(), "jump host connection", c.Close)
	j.srv.HandleConn(c)
}

func (j *Server) isClosed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.closed
}

// track registers a new connection and starts its handshake timer; nil
// once the server is closed.
func (j *Server) track(nc net.Conn) *conn {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	c := &conn{Conn: nc, j: j, remote: nc.RemoteAddr()}
	if j.conns == nil {
		j.conns = map[*conn]struct{}{}
	}
	j.conns[c] = struct{}{}
	j.wg.Add(1)
	c.startHandshakeTimer(j.handshakeTimeout())
	return c
}

// forget closes c, waits for its channel goroutines and unregisters it.
func (j *Server) forget(c *conn) {
	c.shutdown()
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.conns, c)
	for _, u := range c.userNames() {
		delete(j.users[u], c)
		if len(j.users[u]) == 0 {
			delete(j.users, u)
		}
	}
}

// register files c under user, for EndUser.
func (j *Server) register(c *conn, user string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.users == nil {
		j.users = map[string]map[*conn]struct{}{}
	}
	if j.users[user] == nil {
		j.users[user] = map[*conn]struct{}{}
	}
	j.users[user][c] = struct{}{}
}

// Close stops the jump host, closes its connections and waits for their
// goroutines. Safe twice.
func (j *Server) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	var err error
	if j.ln != nil {
		if err = j.ln.Close(); errors.Is(err, net.ErrClosed) {
			err = nil
		}
	}
	for c := range j.conns {
		_ = c.Close()
	}
	remove := j.removeKiller
	j.mu.Unlock()
	if remove != nil {
		remove()
	}
	j.wg.Wait()
	return err
}

// EndUser implements sessions.Killer: the user's jump connections close
// (after a short grace that lets the node's message through the
// connection), and none opens a new channel from now on.
func (j *Server) EndUser(name, reason string) {
	j.mu.Lock()
	var cs []*conn
	for c := range j.users[name] {
		cs = append(cs, c)
	}
	j.mu.Unlock()
	for _, c := range cs {
		c.revoke(reason, revokeGrace)
	}
	if len(cs) > 0 {
		j.log().Info("closing jump connections", "user", name, "count", len(cs), "reason", reason)
	}
}

// EndSession implements sessions.Killer: nothing to do here, the relay
// cuts the session's stream, which ends its channel.
func (j *Server) EndSession(store.Session, string) {}

// EndAgent implements sessions.Killer: nothing to do here, the relay cuts
// the streams to the agent, which ends their channels.
func (j *Server) EndAgent(string, string) {}

func (j *Server) hostSigner() (gliderssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	// The certificate is issued again when the host CA changes (a
	// rotation step) and before it expires: a long-running jump host
	// always presents a current one (certs.HostSigner).
	hs, err := j.CA.NewHostSigner("gateway", j.Names, priv)
	if err != nil {
		return nil, fmt.Errorf("jump host certificate: %w", err)
	}
	return hs, nil
}
