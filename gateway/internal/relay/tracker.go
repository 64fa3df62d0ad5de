package relay

import (
	"fmt"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// liveStream is a relayed stream that revocation or a change of access may
// have to cut.
type liveStream struct {
	caller  identity.ID
	user    string // caller user, "" for agents
	from    string // caller agent, "" for users
	to      string // target node
	service string
	session string
	// abort resets both sides of the stream with code (StreamRevoked,
	// StreamAccessChanged), which tells the caller why.
	abort func(code quic.StreamErrorCode)
	// meter counts the bytes of an SSH session's stream; nil for others.
	meter *meter
	// path is "direct" for a stream between two agents off the relay
	// (direct.go), "" for a relayed one.
	path string
}

// Defaults of the per-caller and per-session stream caps.
const (
	DefaultMaxStreamsPerUser    = 2048
	DefaultMaxStreamsPerAgent   = 4096
	DefaultMaxStreamsPerSession = 8
)

// tracker is the live-stream tracking: the streams being relayed now, and
// how many each caller and each session has in flight (admitted, being
// decided or relayed). It has its own lock, independent of the
// registry's.
type tracker struct {
	mu       sync.Mutex // guards the fields below
	live     map[*liveStream]struct{}
	callers  map[identity.ID]int
	sessions map[string]int
}

// admit counts one more stream of caller (and of session, if not "")
// unless that would pass maxCaller or maxSession; the returned func ends
// it (call it once). The refusal is a sentence for the caller.
func (t *tracker) admit(caller identity.ID, session string, maxCaller, maxSession int) (func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.callers == nil {
		t.callers, t.sessions = map[identity.ID]int{}, map[string]int{}
	}
	if t.callers[caller] >= maxCaller {
		return nil, fmt.Errorf("%d connections of yours already go through this gateway, the most one caller may have at once: close some and try again", maxCaller)
	}
	if session != "" && t.sessions[session] >= maxSession {
		return nil, fmt.Errorf("session %s already carries %d connections, the most one session may: start another session", session, maxSession)
	}
	t.callers[caller]++
	if session != "" {
		t.sessions[session]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.callers[caller]--; t.callers[caller] <= 0 {
				delete(t.callers, caller)
			}
			if session != "" {
				if t.sessions[session]--; t.sessions[session] <= 0 {
					delete(t.sessions, session)
				}
			}
		})
	}, nil
}

// track registers a live stream; the returned func unregisters it (safe
// to call twice).
func (t *tracker) track(l *liveStream) func() {
	t.mu.Lock()
	if t.live == nil {
		t.live = map[*liveStream]struct{}{}
	}
	t.live[l] = struct{}{}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.live, l)
		t.mu.Unlock()
	}
}

// where returns the live streams matching f.
func (t *tracker) where(f func(*liveStream) bool) []*liveStream {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*liveStream
	for l := range t.live {
		if f(l) {
			out = append(out, l)
		}
	}
	return out
}

// LiveStreams implements access.Live: every stream relayed now, with its
// caller, target and session, and a way to cut it.
func (s *Server) LiveStreams() []access.LiveStream {
	ls := s.streams.where(func(*liveStream) bool { return true })
	out := make([]access.LiveStream, 0, len(ls))
	for _, l := range ls {
		out = append(out, access.LiveStream{Caller: l.caller, Actor: actorOf(l.caller), Node: l.to, Service: l.service, Session: l.session,
			End: func(string) { l.abort(transport.StreamAccessChanged) }})
	}
	return out
}

// actorOf names a caller in audit events as peer.Peer.String does.
func actorOf(id identity.ID) string {
	if id.Kind == identity.User {
		return id.Name
	}
	return string(id.Kind) + ":" + id.Name
}
