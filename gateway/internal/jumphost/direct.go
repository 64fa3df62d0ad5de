package jumphost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// directTCPIP is gliderlabs' handler for a direct-tcpip channel, in a
// goroutine gliderlabs starts: it is a boundary (a panic ends this
// connection only) and registers with the connection, which waits for it.
func (j *Server) directTCPIP(_ *gliderssh.Server, sc *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	c, _ := ctx.Value(connKey{}).(*conn)
	if c == nil {
		_ = nc.Reject(gossh.Prohibited, errNotAuthed.Error())
		return
	}
	defer panics.Recover(j.log(), "jump host direct-tcpip channel", c.Close)
	if err := c.admit(j.maxChannels()); err != nil {
		_ = nc.Reject(gossh.ResourceShortage, err.Error())
		return
	}
	defer c.release()
	j.serveChannel(ctx, c, sc, nc)
}

// serveChannel checks the request and the caller again (certificate,
// revocation, user), opens a session and carries the channel to the node's
// SSH endpoint.
func (j *Server) serveChannel(ctx context.Context, c *conn, sc *gossh.ServerConn, nc gossh.NewChannel) {
	node, err := parseDirectTCPIP(nc.ExtraData(), j.CA.Cluster())
	if err != nil {
		_ = nc.Reject(gossh.Prohibited, err.Error())
		return
	}
	w, err := j.recheck(c)
	if err != nil {
		j.log().Info("jump refused", "node", node, "remote", c.remote.String(), "err", err)
		_ = nc.Reject(gossh.Prohibited, err.Error())
		return
	}
	src := hostOf(sc.RemoteAddr())
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
	sess, err := j.Sessions.OpenForJump(ctx, w.user, node, logins, w.serial, certTime(w.cert.ValidBefore), src)
	if err != nil {
		_ = nc.Reject(gossh.Prohibited, err.Error())
		return
	}
	ep, done, err := j.openNode(ctx, w.user.Name, sess, logins, src)
	if err != nil {
		j.Sessions.Unreached(context.Background(), sess.ID, err.Error())
		_ = nc.Reject(gossh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		ep.Abort()
		done(0, 0)
		return
	}
	c.channelOpened()
	defer c.channelClosed()
	if c.enter() {
		go func() {
			defer c.wg.Done()
			defer panics.Recover(j.log(), "jump host channel requests", c.Close)
			gossh.DiscardRequests(reqs)
		}()
	} else {
		_ = ch.Close()
		ep.Abort()
		done(0, 0)
		return
	}
	res := transport.Splice(channel{ch}, ep)
	done(res.AToB, res.BToA)
}

// recheck checks the connection's certificate and user again, for a new
// channel: revoked certificates, locked or removed users and expired
// certificates open nothing, whatever they could when the connection
// authenticated.
func (j *Server) recheck(c *conn) (*who, error) {
	w, revoked := c.identity()
	switch {
	case w == nil:
		return nil, errNotAuthed
	case revoked != "":
		return nil, errAccessRevoked
	}
	return j.checkCert(w.login, c.remote, w.cert)
}

// directTCPIPRequest is a direct-tcpip channel's payload (RFC 4254 7.2).
type directTCPIPRequest struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

// parseDirectTCPIP reads a direct-tcpip channel's payload and returns the
// node it asks for: NODE:22 or NODE.CLUSTER:22, nothing else. Its errors
// are sentences for the user.
func parseDirectTCPIP(payload []byte, cluster string) (string, error) {
	var req directTCPIPRequest
	if err := gossh.Unmarshal(payload, &req); err != nil {
		return "", errors.New("malformed direct-tcpip request")
	}
	node := strings.TrimSuffix(identity.CanonicalName(req.Host), "."+cluster)
	if req.Port != 22 || identity.ValidateName("node", node) != nil {
		return "", fmt.Errorf("the jump host only reaches NODE:22 or NODE.%s:22 (asked for %s:%d)", cluster, quoted(req.Host), req.Port)
	}
	return node, nil
}

// quoted shows a name sent by the client, short and printable.
func quoted(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	if q := strconv.Quote(s); q != `"`+s+`"` {
		return q
	}
	return s
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

// opener opens the stream that carries a granted channel to the node, and
// returns it with the func that reports the bytes carried and ends it.
type opener func(ctx context.Context, user string, sess store.Session, logins []string, src string) (transport.Endpoint, func(in, out int64), error)

func (j *Server) openNode(ctx context.Context, user string, sess store.Session, logins []string, src string) (transport.Endpoint, func(in, out int64), error) {
	if j.open != nil {
		return j.open(ctx, user, sess, logins, src)
	}
	st, err := j.Relay.OpenSSH(ctx, user, sess, logins, src)
	if err != nil {
		return nil, nil, err
	}
	return st.Endpoint(), st.Done, nil
}
