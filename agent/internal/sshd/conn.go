package sshd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// conn is one SSH connection.
//
// Its life: authenticating (offer and verified run, keys are stashed in
// offered) → active (grant set, deadline timer and idle watcher running,
// channels open) → ending (ctx cancelled with a cause; shutdown writes the
// cause to every channel and closes the net.Conn) → done (serveConn has
// waited for every goroutine).
type conn struct {
	srv    *Server
	nc     net.Conn
	ctx    context.Context // cancelled with the reason the connection ends
	cancel context.CancelCauseFunc
	log    *slog.Logger
	start  time.Time

	lastActive atomic.Int64 // nanoseconds since start of the last traffic

	mu       sync.Mutex // guards the fields below
	offered  map[string]*certInfo
	grant    *grant
	verified string // the key the client proved it holds, marshalled
	chans    map[*session]struct{}
	sshConn  *gossh.ServerConn
	closing  bool // no more goroutines may start
	timers   []func() bool
	agentFwd *agentForwarder

	wg sync.WaitGroup // every goroutine the connection starts
}

// maxOffered bounds the keys stashed per connection.
const maxOffered = 16

func (s *Server) serveConn(parent context.Context, nc net.Conn) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(errClientClosed)
	c := &conn{
		srv:     s,
		nc:      nc,
		ctx:     ctx,
		cancel:  cancel,
		log:     s.log.With("remote", addrString(nc.RemoteAddr())),
		start:   time.Now(),
		offered: map[string]*certInfo{},
		chans:   map[*session]struct{}{},
	}
	if !s.track(c, true) {
		_ = nc.Close()
		return
	}
	defer s.track(c, false)

	hs := time.AfterFunc(s.cfg.HandshakeTimeout, func() {
		if c.currentGrant() == nil {
			c.end(&EndError{Kind: ErrHandshakeTimeout, Message: "authentication timed out"})
		}
	})
	c.addTimer(hs.Stop)

	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer panics.Recover(c.log, "agent SSH connection shutdown", nc.Close)
		<-ctx.Done()
		c.shutdown(context.Cause(ctx))
	}()

	gl := &gliderssh.Server{
		HostSigners:      []gliderssh.Signer{s.cfg.HostSigner},
		PublicKeyHandler: c.offer,
		ServerConfigCallback: func(gliderssh.Context) *gossh.ServerConfig {
			cfg := sshConfig()
			cfg.VerifiedPublicKeyCallback = c.verifiedKey
			return cfg
		},
		ChannelHandlers: map[string]gliderssh.ChannelHandler{
			"session":      c.handleSession,
			"direct-tcpip": c.handleDirectTCPIP,
		},
		// No global request is served: remote forwarding (tcpip-forward)
		// is refused, and keepalives get the failure reply OpenSSH expects.
		RequestHandlers:   map[string]gliderssh.RequestHandler{},
		SubsystemHandlers: map[string]gliderssh.SubsystemHandler{},
		ConnectionFailedCallback: func(_ net.Conn, err error) {
			c.log.Info("ssh handshake failed", "err", err)
		},
	}
	c.handle(gl) // returns once the connection is closed

	cancel(errClientClosed) // no-op if already ended with a cause
	c.mu.Lock()
	c.closing = true
	timers := c.timers
	fwd := c.agentFwd
	c.mu.Unlock()
	for _, stop := range timers {
		stop()
	}
	if fwd != nil {
		fwd.close()
	}
	c.wg.Wait()
	if g := c.currentGrant(); g != nil {
		c.log.Info("ssh connection closed", "session", g.sess.ID, "user", g.sess.User,
			"login", g.sess.Login, "cause", context.Cause(ctx).Error())
	}
}

// handle runs gliderlabs' connection loop (the handshake, then the
// channels). A panic there (in a callback such as LookupSession, or in
// gliderlabs itself) ends this connection only.
func (c *conn) handle(gl *gliderssh.Server) {
	defer panics.Recover(c.log, "agent SSH connection", func() error {
		_ = c.abort()
		return c.nc.Close()
	})
	gl.HandleConn(c.nc)
}

// end ends the connection with cause, which the user is shown.
func (c *conn) end(cause error) { c.cancel(cause) }

// abort ends the connection after a panic recovered in one of its
// goroutines: the user is told, the connection closes, the server goes on.
// It is the cleanup given to panics.Recover.
func (c *conn) abort() error {
	c.end(&EndError{Kind: ErrInternal, Message: "tunnel: internal error in the node's SSH endpoint; this connection was closed (the error is in the agent's log)"})
	return nil
}

// enter registers a goroutine of the connection; false once it is ending.
func (c *conn) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	return true
}

func (c *conn) addTimer(stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timers = append(c.timers, stop)
}

func (c *conn) sessionID() string {
	if g := c.currentGrant(); g != nil {
		return g.sess.ID
	}
	return ""
}

func (c *conn) currentGrant() *grant {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grant
}

// touch records traffic, for the idle timeout.
func (c *conn) touch() { c.lastActive.Store(int64(time.Since(c.start))) }

// offer is gliderlabs' PublicKeyHandler. It runs for every key the client
// offers, held or not, so it only checks the certificate and stashes the
// result under the key; nothing here grants anything.
func (c *conn) offer(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
	info, err := c.srv.checkCert(ctx.User(), ctx.RemoteAddr(), key)
	if err != nil {
		c.log.Info("ssh key refused", "login", ctx.User(), "key", gossh.FingerprintSHA256(key), "err", err)
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.offered) >= maxOffered {
		return false
	}
	c.offered[string(key.Marshal())] = info
	c.log.Debug("ssh certificate acceptable", "login", ctx.User(), "user", info.user,
		"session", info.sessionID, "serial", info.cert.Serial)
	return true
}

// verifiedKey is x/crypto's VerifiedPublicKeyCallback: it runs only for the
// key the client has just signed with. Only here is the session looked up
// and the grant made, and its errors are shown to the user as a banner.
func (c *conn) verifiedKey(meta gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
	k := string(key.Marshal())
	c.mu.Lock()
	info := c.offered[k]
	c.mu.Unlock()
	if info == nil {
		return nil, errors.New("key was not accepted")
	}
	// Check again: the CAs, revocation or the clock may have moved since
	// the key was offered.
	info, err := c.srv.checkCert(meta.User(), meta.RemoteAddr(), key)
	if err != nil {
		return nil, err
	}
	g, err := c.srv.verify(c.ctx, meta.User(), info)
	if err != nil {
		c.log.Info("ssh login refused", "login", meta.User(), "user", info.user, "session", info.sessionID, "err", err)
		return nil, &gossh.BannerError{Err: err, Message: "tunnel: " + err.Error() + "\r\n"}
	}
	g.key = k
	c.mu.Lock()
	c.grant = g
	c.verified = k
	c.mu.Unlock()
	// EndSession looks for the connection by its grant: check after it is
	// set, so that an EndSession racing with this login is never missed.
	if c.srv.sessionEnded(g.sess.ID) {
		return nil, &gossh.BannerError{Err: ErrSessionEnded, Message: "tunnel: session " + g.sess.ID + " has ended\r\n"}
	}
	c.activate(g)
	c.log.Info("ssh login", "session", g.sess.ID, "user", g.sess.User, "login", g.sess.Login,
		"serial", info.cert.Serial, "deadline", g.deadline)
	perms := &gossh.Permissions{CriticalOptions: map[string]string{}, Extensions: map[string]string{}}
	for k, v := range info.cert.CriticalOptions {
		perms.CriticalOptions[k] = v
	}
	for k, v := range info.cert.Extensions {
		perms.Extensions[k] = v
	}
	return perms, nil
}

// identity returns the grant for the key the connection authenticated
// with, read from gliderlabs' context (the final public key), never from
// whichever key the handler saw last.
func (c *conn) identity(ctx gliderssh.Context) *grant {
	pk, _ := ctx.Value(gliderssh.ContextKeyPublicKey).(gliderssh.PublicKey)
	if pk == nil {
		return nil
	}
	k := string(pk.Marshal())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.grant == nil || c.verified != k || c.grant.key != k {
		return nil
	}
	return c.grant
}

// activate starts the deadline timer and the idle watcher.
func (c *conn) activate(g *grant) {
	c.touch()
	d := g.deadline.Sub(c.srv.clock())
	t := time.AfterFunc(d, func() {
		c.end(&EndError{Kind: ErrSessionExpired, Message: expiredMessage(g.deadline)})
	})
	c.addTimer(t.Stop)
	idle := g.sess.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if !c.enter() {
		return
	}
	go func() {
		defer c.wg.Done()
		defer panics.Recover(c.log, "agent SSH idle watcher", c.abort)
		c.watchIdle(idle)
	}()
}

func (c *conn) watchIdle(idle time.Duration) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		since := time.Since(c.start) - time.Duration(c.lastActive.Load())
		if since >= idle {
			c.end(&EndError{Kind: ErrIdleTimeout, Message: idleMessage(idle)})
			return
		}
		t.Reset(idle - since)
	}
}

// noticeTimeout bounds the time spent telling channels why the connection
// ends (a client that reads nothing cannot hold the connection open).
const noticeTimeout = 2 * time.Second

// shutdown tells every channel why the connection ends, then closes it.
func (c *conn) shutdown(cause error) {
	var ee *EndError
	if errors.As(cause, &ee) {
		c.mu.Lock()
		chans := make([]*session, 0, len(c.chans))
		for s := range c.chans {
			chans = append(chans, s)
		}
		c.mu.Unlock()
		t := time.AfterFunc(noticeTimeout, func() { _ = c.nc.Close() })
		for _, s := range chans {
			s.notify(ee.Message)
		}
		t.Stop()
		c.log.Info("ending ssh connection", "session", c.sessionID(), "cause", ee.Message)
	}
	_ = c.nc.Close()
}

func (c *conn) addChan(s *session, add bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if add {
		c.chans[s] = struct{}{}
	} else {
		delete(c.chans, s)
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
