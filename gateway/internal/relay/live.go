package relay

import (
	"context"
	"strings"
	"time"

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
	// Unreached ends a session whose stream could not reach its node,
	// with the reason the user was given (no-op if it ended).
	Unreached(ctx context.Context, id, reason string)
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
	// The node puts a sudoers drop-in for the session's login in place
	// while the session lives when the permit says "sudo".
	if su, ok := s.Sessions.(interface {
		Sudo(ctx context.Context, user, node string) (bool, error)
	}); ok {
		if sudo, err := su.Sudo(ctx, user, node); err == nil && sudo {
			p = append(p, "sudo")
		}
	}
	return strings.Join(p, ",")
}

// sshGrace is how long an SSH stream of an ended session stays open so
// that the node's message ("session expired", "access revoked") reaches
// the user before the gateway cuts the stream itself.
const sshGrace = 500 * time.Millisecond

// streamsWhere returns the live streams matching f.
func (s *Server) streamsWhere(f func(*liveStream) bool) []*liveStream {
	return s.streams.where(f)
}

// EndSession implements sessions.Killer: the node closes the session's SSH
// connections with the reason, and the gateway cuts what is left after a
// short grace.
func (s *Server) EndSession(sess store.Session, reason string) {
	now := time.Now()
	if ac := s.lookup(sess.Node); ac != nil {
		if err := ac.sendControl(wire.Control{Type: wire.MsgEndSession, Session: sess.ID, Message: reason}); err != nil {
			s.log().Warn("tell node to end session", "node", sess.Node, "session", sess.ID, "err", err)
		}
	}
	streams := s.streamsWhere(func(l *liveStream) bool { return l.session == sess.ID })
	if len(streams) == 0 {
		return
	}
	for _, l := range streams {
		l.markRevoked(now)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		time.Sleep(sshGrace)
		for _, l := range streams {
			l.abort(transport.StreamRevoked)
		}
	}()
}

// EndUser implements sessions.Killer: every stream and connection of the
// user is cut now. (Their SSH sessions were ended first, with the reason.)
func (s *Server) EndUser(name, reason string) {
	now := time.Now()
	for _, l := range s.streamsWhere(func(l *liveStream) bool { return l.user == name && l.session == "" }) {
		l.markRevoked(now)
		l.abort(transport.StreamRevoked)
	}
	conns := s.reg.userConnsOf(name)
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
	now := time.Now()
	conns := s.reg.dropAgent(name)
	for _, l := range s.streamsWhere(func(l *liveStream) bool { return l.session == "" && (l.from == name || l.to == name) }) {
		l.markRevoked(now)
		l.abort(transport.StreamRevoked)
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
