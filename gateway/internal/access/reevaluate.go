package access

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/policy"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// ReasonPrefix starts the reason a user is shown when a live session or
// stream is closed because a change of roles or rules no longer allows it.
const ReasonPrefix = "access changed by an administrator: "

// LiveStream is one relayed stream running now, as the relay's live-stream
// tracker reports it.
type LiveStream struct {
	Caller identity.ID
	// Actor names the caller in audit events as the stream's own events
	// did ("alice", "agent:app-1"); empty means Caller.String().
	Actor   string
	Node    string
	Service string
	// Source is the caller's source address ("192.0.2.1"), against which
	// the source networks of a user's roles are checked again; "" means
	// unknown to the tracker, and then they are not.
	Source string
	// Session is the SSH session the stream carries; "" for a tunnel
	// stream. Session streams are re-evaluated through their session.
	Session string
	// End cuts the stream, for the reason given.
	End func(reason string)
}

// Live is what runs now: the relay's live-stream tracker.
type Live interface {
	LiveStreams() []LiveStream
}

// SessionEnder ends an active session whose access changed, closing its
// live connections with reason (sessions.Manager).
type SessionEnder interface {
	EndChanged(ctx context.Context, s store.Session, reason string)
}

// Reevaluate asks the decisions again for every active SSH session and
// every live tunnel stream, and closes those no longer allowed with a
// reason starting with ReasonPrefix. Call it after every successful change
// of a role, of a user's roles or of the policy rules (on this gateway or
// arriving from another). It reloads the policy cache first. Calls are
// serialised; a decision that cannot be made leaves its stream or session
// alone and is reported in the returned error.
func (d *Decider) Reevaluate(ctx context.Context) error {
	d.remu.Lock()
	defer d.remu.Unlock()
	var errs []error
	if err := d.ReloadPolicy(ctx); err != nil {
		return err
	}
	// One pass reads each user and role once, however many sessions and
	// streams they have.
	rd := &memo{st: d.Store, users: map[string]userResult{}, roles: map[string]roleResult{}, grants: map[string]grantsResult{}}
	if d.Sessions != nil {
		active, err := d.Store.ListSessions(ctx, store.SessionFilter{ActiveOnly: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("list active sessions: %w", err))
		}
		for _, s := range active {
			why, err := d.sessionRefusal(ctx, rd, s)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("re-evaluate session %s: %w", s.ID, err))
			case why != "":
				reason := ReasonPrefix + why
				if ended := d.grantEnded(ctx, rd, s.User, func(r store.Role) bool { return matchesAny(r.Nodes, s.Node) }); ended != "" {
					reason = ended
				}
				d.log().Info("session no longer allowed", "session", s.ID, "user", s.User, "node", s.Node, "reason", reason)
				d.Sessions.EndChanged(ctx, s, reason)
			}
		}
	}
	if d.Live != nil {
		for _, l := range d.Live.LiveStreams() {
			if l.Session != "" || l.Service == api.SSHService {
				continue // through its session, above
			}
			src := anySource
			if l.Source != "" {
				src = from(ParseAddr(l.Source))
			}
			dec, err := d.decideStream(ctx, rd, l.Caller, l.Node, l.Service, src)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("re-evaluate stream of %s to %s/%s: %w", l.Caller, l.Node, l.Service, err))
			case !dec.Allowed:
				reason := ReasonPrefix + dec.Reason
				if l.Caller.Kind == identity.User {
					if ended := d.grantEnded(ctx, rd, l.Caller.Name, func(r store.Role) bool {
						return policy.AllowedByPatterns(r.Services, l.Node, l.Service)
					}); ended != "" {
						reason = ended
					}
				}
				actor := l.Actor
				if actor == "" {
					actor = l.Caller.String()
				}
				ev := audit.Event{Time: d.now(), Type: audit.StreamDenied, Actor: actor, Subject: l.Node + "/" + l.Service,
					Outcome: audit.Failure, Reason: reason, Details: map[string]string{"live": "closed"}}
				if err := d.write(ctx, ev); err != nil {
					d.log().Error("write audit event", "type", ev.Type, "err", err)
				}
				d.log().Info("stream no longer allowed", "caller", actor, "target", l.Node+"/"+l.Service, "reason", dec.Reason)
				l.End(reason)
			}
		}
	}
	return errors.Join(errs...)
}

// sessionRefusal says what no longer allows s, or "" if it is still
// allowed.
func (d *Decider) sessionRefusal(ctx context.Context, rd reader, s store.Session) (string, error) {
	u, err := rd.GetUser(ctx, s.User)
	if errors.Is(err, store.ErrNotFound) {
		return "user " + s.User + " no longer exists", nil
	}
	if err != nil {
		return "", err
	}
	// The session's source is checked against the roles' source networks
	// again: a session whose source is not recorded counts only through
	// roles without them.
	src := from(ParseAddr(s.SourceIP))
	g, err := d.ssh(ctx, rd, u, s.Node, src)
	if err != nil {
		return "", err
	}
	if !g.Allowed() {
		if g.SourceRefused("") {
			return SourceRefusal(src.addr, g.Outside), nil
		}
		return fmt.Sprintf("none of your roles allows %s any more", s.Node), nil
	}
	// A jump host session holds the logins the node may accept, comma-
	// separated: it stays while one of them is still allowed.
	for _, l := range strings.Split(s.Login, ",") {
		if g.AllowsLogin(l) {
			return "", nil
		}
	}
	if g.SourceRefused(s.Login) {
		return SourceRefusal(src.addr, g.Outside), nil
	}
	return fmt.Sprintf("your roles no longer allow login %q on %s", s.Login, s.Node), nil
}

// memo reads users, roles and grants from the store once each (errors
// too).
type memo struct {
	st     reader
	users  map[string]userResult
	roles  map[string]roleResult
	grants map[string]grantsResult
}

type grantsResult struct {
	at  time.Time
	gs  []store.AccessRequest
	err error
}

func (m *memo) ActiveGrants(ctx context.Context, user string, now time.Time) ([]store.AccessRequest, error) {
	res, ok := m.grants[user]
	if !ok || !res.at.Equal(now) {
		res.at = now
		res.gs, res.err = m.st.ActiveGrants(ctx, user, now)
		m.grants[user] = res
	}
	return res.gs, res.err
}

type userResult struct {
	u   store.User
	err error
}

type roleResult struct {
	r   store.Role
	err error
}

func (m *memo) GetUser(ctx context.Context, name string) (store.User, error) {
	res, ok := m.users[name]
	if !ok {
		res.u, res.err = m.st.GetUser(ctx, name)
		m.users[name] = res
	}
	return res.u, res.err
}

func (m *memo) GetRole(ctx context.Context, name string) (store.Role, error) {
	res, ok := m.roles[name]
	if !ok {
		res.r, res.err = m.st.GetRole(ctx, name)
		m.roles[name] = res
	}
	return res.r, res.err
}
