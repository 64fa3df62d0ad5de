package relay

import (
	"context"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// SessionChecker is what the relay needs of the session manager.
type SessionChecker interface {
	// Check returns the session if it may carry a new stream for user to
	// node now.
	Check(ctx context.Context, user, node, id string) (store.Session, error)
	// Closed ends a session whose client went away (no-op if it ended).
	Closed(ctx context.Context, id string)
	// Forwarding says whether user's roles allow port and agent
	// forwarding on node.
	Forwarding(ctx context.Context, user, node string) (port, agent bool, err error)
}

// permit renders what a session may do for the stream header.
func (s *Server) permit(ctx context.Context, user, node string) string {
	if s.Sessions == nil {
		return ""
	}
	port, agent, err := s.Sessions.Forwarding(ctx, user, node)
	if err != nil {
		return ""
	}
	var p []string
	if port {
		p = append(p, "port-forwarding")
	}
	if agent {
		p = append(p, "agent-forwarding")
	}
	return strings.Join(p, ",")
}

// sshGrace is how long an SSH stream of an ended session stays open so
// that the node's message ("session expired", "access revoked") reaches
// the user before the gateway cuts the stream itself.
const sshGrace = 500 * time.Millisecond

// liveStream is a relayed stream that revocation may have to cut.
type liveStream struct {
	user    string // caller user, "" for agents
	from    string // caller agent, "" for users
	to      string // target node
	session string
	abort   func()
	// meter counts the bytes of an SSH session's stream; nil for others.
	meter *meter
}

// track registers a live stream; the returned func unregisters it (safe
// to call twice).
func (s *Server) track(l *liveStream) func() {
	s.mu.Lock()
	if s.live == nil {
		s.live = map[*liveStream]struct{}{}
	}
	s.live[l] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.live, l)
		s.mu.Unlock()
	}
}

// streamsWhere returns the live streams matching f.
func (s *Server) streamsWhere(f func(*liveStream) bool) []*liveStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*liveStream
	for l := range s.live {
		if f(l) {
			out = append(out, l)
		}
	}
	return out
}

// trackConn records a user's connection so EndUser can close it.
func (s *Server) trackConn(user string, c *quic.Conn) func() {
	s.mu.Lock()
	if s.userConns == nil {
		s.userConns = map[string]map[*quic.Conn]struct{}{}
	}
	if s.userConns[user] == nil {
		s.userConns[user] = map[*quic.Conn]struct{}{}
	}
	s.userConns[user][c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.userConns[user], c)
		if len(s.userConns[user]) == 0 {
			delete(s.userConns, user)
		}
		s.mu.Unlock()
	}
}

// EndSession implements sessions.Killer: the node closes the session's SSH
// connections with the reason, and the gateway cuts what is left after a
// short grace.
func (s *Server) EndSession(sess store.Session, reason string) {
	if ac := s.lookup(sess.Node); ac != nil {
		if err := ac.sendControl(wire.Control{Type: wire.MsgEndSession, Session: sess.ID, Message: reason}); err != nil {
			s.log().Warn("tell node to end session", "node", sess.Node, "session", sess.ID, "err", err)
		}
	}
	streams := s.streamsWhere(func(l *liveStream) bool { return l.session == sess.ID })
	if len(streams) == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		time.Sleep(sshGrace)
		for _, l := range streams {
			l.abort()
		}
	}()
}

// EndUser implements sessions.Killer: every stream and connection of the
// user is cut now. (Their SSH sessions were ended first, with the reason.)
func (s *Server) EndUser(name, reason string) {
	for _, l := range s.streamsWhere(func(l *liveStream) bool { return l.user == name && l.session == "" }) {
		l.abort()
	}
	s.mu.Lock()
	var conns []*quic.Conn
	for c := range s.userConns[name] {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Let the SSH sessions' messages through before the connection goes.
		time.Sleep(sshGrace)
		for _, c := range conns {
			c.CloseWithError(transport.CodeRevoked, reason)
		}
	}()
}

// EndAgent implements sessions.Killer: the agent leaves the registry at
// once (no new stream reaches it), its tunnel streams are cut now, and its
// connection closes after the grace that lets its SSH sessions' messages
// through.
func (s *Server) EndAgent(name, reason string) {
	s.mu.Lock()
	var conns []*quic.Conn
	if ac := s.agents[name]; ac != nil {
		delete(s.agents, name)
		conns = append(conns, ac.conn)
	}
	for ac := range s.retiring {
		if ac.name == name {
			conns = append(conns, ac.conn)
		}
	}
	s.mu.Unlock()
	for _, l := range s.streamsWhere(func(l *liveStream) bool { return l.session == "" && (l.from == name || l.to == name) }) {
		l.abort()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		time.Sleep(sshGrace)
		for _, c := range conns {
			c.CloseWithError(transport.CodeRevoked, reason)
		}
	}()
}
