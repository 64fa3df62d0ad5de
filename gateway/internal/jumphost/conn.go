package jumphost

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// connKey is the gliderlabs context key of the *conn being served.
type connKey struct{}

// conn is one jump host connection: the accepted connection (what
// gliderlabs serves) with its identity, its timers and its channels.
//
// States: handshaking (handshake timer running) → authenticated (who set;
// idle timer running while no channel is open; expiry timer) → closing
// (shutdown: timers stopped, connection closed, channel goroutines
// waited for). A revoked connection (EndUser) opens no channel and closes
// after a grace.
type conn struct {
	net.Conn
	j      *Server
	remote net.Addr

	mu      sync.Mutex // guards the fields below
	names   []string   // user names it tried to authenticate as (registered)
	who     *who       // set once authenticated
	revoked string     // why, once EndUser revoked it
	chans   int        // open channels
	// handlers counts direct-tcpip channels being served (opening or
	// open), capped by the server's MaxChannels.
	handlers int
	closing  bool
	hs       *time.Timer // handshake deadline
	idle     *time.Timer // no channel open for IdleTimeout
	expiry   *time.Timer // the certificate's expiry
	kill     *time.Timer // EndUser's grace

	wg        sync.WaitGroup // channel goroutines, added under mu while !closing
	closeOnce sync.Once
	closeErr  error
}

// Close closes the connection. Safe twice and from any goroutine.
func (c *conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.Conn.Close() })
	return c.closeErr
}

func (c *conn) startHandshakeTimer(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hs = time.AfterFunc(d, func() {
		c.mu.Lock()
		authed := c.who != nil
		c.mu.Unlock()
		if !authed {
			c.j.log().Info("jump host: closing a connection that did not authenticate in time",
				"remote", c.remote.String(), "timeout", d)
			_ = c.Close()
		}
	})
}

// addName records a user name the client tries; the caller registers the
// connection under it.
func (c *conn) addName(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.names {
		if n == name {
			return
		}
	}
	c.names = append(c.names, name)
}

func (c *conn) userNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names...)
}

// authenticated records the identity proved and moves from the handshake
// deadline to the idle and expiry timers.
func (c *conn) authenticated(w *who, idle, untilExpiry time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.who = w
	if c.closing {
		return
	}
	if c.hs != nil {
		c.hs.Stop()
	}
	c.idle = time.AfterFunc(idle, func() {
		c.mu.Lock()
		quiet := c.chans == 0 && !c.closing
		c.mu.Unlock()
		if quiet {
			c.j.log().Info("jump host: closing an idle connection", "user", w.user.Name, "remote", c.remote.String(), "idle", idle)
			_ = c.Close()
		}
	})
	c.expiry = time.AfterFunc(untilExpiry+revokeGrace, func() {
		c.j.log().Info("jump host: closing a connection whose certificate expired", "user", w.user.Name)
		_ = c.Close()
	})
}

// identity returns the identity proved and why the connection was
// revoked ("" if it was not).
func (c *conn) identity() (*who, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.who, c.revoked
}

// enter registers a channel goroutine; false once the connection closes.
func (c *conn) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	return true
}

// errClosing refuses a channel on a connection that is closing.
var errClosing = errors.New("the connection is closing")

// admit registers a direct-tcpip channel handler, at most max at once: a
// refusal the client is shown once the connection closes or is full.
func (c *conn) admit(max int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing:
		return errClosing
	case c.handlers >= max:
		return fmt.Errorf("this connection already carries %d channels, the most one connection may: close some, or open another connection", max)
	}
	c.handlers++
	c.wg.Add(1)
	return nil
}

// release ends a handler admit registered.
func (c *conn) release() {
	c.mu.Lock()
	c.handlers--
	c.mu.Unlock()
	c.wg.Done()
}

// channelOpened and channelClosed count open channels for the idle timer.
func (c *conn) channelOpened() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.chans++
	if c.idle != nil {
		c.idle.Stop()
	}
}

func (c *conn) channelClosed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.chans--
	if c.chans == 0 && c.idle != nil && !c.closing {
		c.idle.Reset(c.j.idleTimeout())
	}
}

// revoke refuses new channels from now on and closes the connection after
// grace.
func (c *conn) revoke(reason string, grace time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked == "" {
		c.revoked = reason
	}
	if c.kill == nil && !c.closing {
		c.kill = time.AfterFunc(grace, func() { _ = c.Close() })
	}
}

// shutdown stops the timers, closes the connection and waits for its
// channel goroutines.
func (c *conn) shutdown() {
	c.mu.Lock()
	c.closing = true
	for _, t := range []*time.Timer{c.hs, c.idle, c.expiry, c.kill} {
		if t != nil {
			t.Stop()
		}
	}
	c.mu.Unlock()
	_ = c.Close()
	c.wg.Wait()
}
