package sshd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// dialTimeout bounds the dial of a forwarded connection.
const dialTimeout = 10 * time.Second

// handleDirectTCPIP serves ssh -L: allowed only when both the session and
// the certificate allow port forwarding.
func (c *conn) handleDirectTCPIP(_ *gliderssh.Server, _ *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	// gliderlabs starts this goroutine: a panic here ends this connection,
	// not the agent.
	defer panics.Recover(c.log, "agent SSH direct-tcpip channel", c.abort)
	if !c.enter() {
		_ = nc.Reject(gossh.ResourceShortage, "the connection is closing")
		return
	}
	defer c.wg.Done()
	g := c.identity(ctx)
	if g == nil {
		_ = nc.Reject(gossh.Prohibited, "not authenticated")
		return
	}
	if !g.sess.AllowPortForwarding || !g.can("permit-port-forwarding") {
		_ = nc.Reject(gossh.Prohibited, "port forwarding is not allowed in this session")
		return
	}
	var d struct {
		DestAddr   string
		DestPort   uint32
		OriginAddr string
		OriginPort uint32
	}
	if err := gossh.Unmarshal(nc.ExtraData(), &d); err != nil || d.DestPort > 65535 {
		_ = nc.Reject(gossh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	addr := net.JoinHostPort(d.DestAddr, strconv.Itoa(int(d.DestPort)))
	dctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	tc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		_ = nc.Reject(gossh.ConnectionFailed, fmt.Sprintf("cannot connect to %s: %v", addr, err))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		_ = tc.Close()
		return
	}
	c.discard(reqs)
	c.log.Info("port forwarding", "session", g.sess.ID, "to", addr)
	transport.Splice(channelEndpoint{ch, c}, transport.TCP{TCPConn: tc.(*net.TCPConn)})
}

// discard answers a channel's requests with failure until it closes.
func (c *conn) discard(reqs <-chan *gossh.Request) {
	if !c.enter() {
		go gossh.DiscardRequests(reqs) // ends with the connection, closing now
		return
	}
	go func() {
		defer c.wg.Done()
		defer panics.Recover(c.log, "agent SSH channel requests", c.abort)
		gossh.DiscardRequests(reqs)
	}()
}

// channelEndpoint adapts an SSH channel to transport.Endpoint; its traffic
// counts as activity.
type channelEndpoint struct {
	gossh.Channel
	c *conn
}

func (e channelEndpoint) Read(p []byte) (int, error) {
	n, err := e.Channel.Read(p)
	if n > 0 {
		e.c.touch()
	}
	return n, err
}

func (e channelEndpoint) Write(p []byte) (int, error) {
	e.c.touch()
	return e.Channel.Write(p)
}

func (e channelEndpoint) Abort() { _ = e.Channel.Close() }

// unixEndpoint adapts a Unix socket connection to transport.Endpoint.
type unixEndpoint struct{ *net.UnixConn }

func (u unixEndpoint) Abort() { _ = u.UnixConn.Close() }

// agentForwarder is a connection's forwarded agent socket: connections to
// it become auth-agent@openssh.com channels to the client.
type agentForwarder struct {
	dir  string
	sock string
	ln   net.Listener
}

func (f *agentForwarder) close() {
	_ = f.ln.Close()
	_ = os.RemoveAll(f.dir)
}

// agentSocket returns the connection's agent socket, creating it (owned by
// the login) on first use.
func (c *conn) agentSocket(g *grant) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agentFwd != nil {
		return c.agentFwd.sock, nil
	}
	if c.closing || c.sshConn == nil {
		return "", fmt.Errorf("the connection is closing")
	}
	dir, err := os.MkdirTemp("", "tunnel-ssh-agent-")
	if err != nil {
		return "", err
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	if cred := g.user.credential(); cred != nil {
		for _, p := range []string{dir, sock} {
			if err := os.Lchown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				_ = ln.Close()
				_ = os.RemoveAll(dir)
				return "", err
			}
		}
	}
	f := &agentForwarder{dir: dir, sock: sock, ln: ln}
	c.agentFwd = f
	sc := c.sshConn
	c.wg.Add(1) // c.closing is false under c.mu
	go func() {
		defer c.wg.Done()
		defer panics.Recover(c.log, "agent SSH agent-forwarding listener", c.abort)
		for {
			uc, err := ln.Accept()
			if err != nil {
				return
			}
			if !c.enter() {
				_ = uc.Close()
				return
			}
			go func() {
				defer c.wg.Done()
				defer panics.Recover(c.log, "agent SSH forwarded agent connection", func() error {
					_ = c.abort()
					return uc.Close()
				})
				ch, reqs, err := sc.OpenChannel("auth-agent@openssh.com", nil)
				if err != nil {
					_ = uc.Close()
					return
				}
				c.discard(reqs)
				transport.Splice(unixEndpoint{uc.(*net.UnixConn)}, channelEndpoint{ch, c})
			}()
		}
	}()
	return sock, nil
}
