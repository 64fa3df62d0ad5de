package relay

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
	// src is the caller's source address ("192.0.2.1"), "" if unknown:
	// live re-evaluation checks it against the roles' source networks.
	src string
	// abort resets both sides of the stream with code (StreamRevoked,
	// StreamAccessChanged), which tells the caller why.
	abort func(code quic.StreamErrorCode)
	// meter counts the bytes of an SSH session's stream; nil for others.
	meter *meter
	// path is "direct" for a stream between two agents off the relay
	// (direct.go), "" for a relayed one, "tcp" for one relayed for a
	// caller connected over TCP (pathOf).
	path string
	// bytes counts the bytes of a relayed stream for the metrics; nil
	// means meter's (an SSH session's stream), or none (a direct stream).
	bytes *meter
	// callerSerial and targetSerial are the serials of the certificates
	// the caller's and the target's connections were authenticated with
	// ("" when there is none, an SSH stream's caller): EndCerts cuts the
	// streams of a revoked certificate.
	callerSerial, targetSerial string
	// revokedAt is when a revocation that cuts this stream was applied
	// (live.go), nil if none was: the stream's end is then observed in the
	// revocation histogram (ObserveRevocations).
	revokedAt atomic.Pointer[time.Time]
	// held: a direct stream decided ahead whose grant its caller holds
	// unused (direct.go). It is tracked, so that a revocation cuts the
	// grant, but not counted in the metrics until it starts (started).
	held atomic.Bool
}

// Paths of streams, as the metrics name them: relayed by this gateway
// (QUIC over UDP), direct between two agents, relayed with the caller's
// connection carried over TCP.
const (
	PathRelayed = "relayed"
	PathDirect  = "direct"
	PathTCP     = "tcp"
)

// paths are the paths by their index in tracker.total.
var paths = [...]string{PathRelayed, PathDirect, PathTCP}

// pathIndex is a path's slot in tracker.total.
func (l *liveStream) pathIndex() int {
	switch l.path {
	case PathDirect:
		return 1
	case PathTCP:
		return 2
	}
	return 0
}

// overTCPKey marks the context of a connection carried over TCP.
type overTCPKey struct{}

// OverTCP wraps the ConnContext of the QUIC-over-TCP transport so that the
// streams of its connections count under the path "tcp" (pathOf).
func OverTCP(next func(context.Context, *quic.ClientInfo) (context.Context, error)) func(context.Context, *quic.ClientInfo) (context.Context, error) {
	return func(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
		if next != nil {
			var err error
			if ctx, err = next(ctx, info); err != nil {
				return ctx, err
			}
		}
		return context.WithValue(ctx, overTCPKey{}, true), nil
	}
}

// pathOf is the path of a stream relayed for a caller whose connection's
// context is ctx: PathTCP over a transport wrapped by OverTCP, "" (relayed)
// otherwise.
func pathOf(ctx context.Context) string {
	if v, _ := ctx.Value(overTCPKey{}).(bool); v {
		return PathTCP
	}
	return ""
}

// counted is the meter of the stream's bytes, nil if none.
func (l *liveStream) counted() *meter {
	if l.bytes != nil {
		return l.bytes
	}
	return l.meter
}

// markRevoked records that a revocation cutting l was applied now; the
// first one counts.
func (l *liveStream) markRevoked(now time.Time) {
	l.revokedAt.CompareAndSwap(nil, &now)
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

	// For the metrics, lock-free: streams tracked so far by path
	// (pathIndex), the bytes of the streams that ended, and what observes
	// the end of a revoked stream.
	total               [len(paths)]atomic.Uint64
	endedIn, endedOut   atomic.Uint64
	onRevokedStreamDone atomic.Pointer[func(time.Duration)]
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
// to call twice). The stream is counted in the metrics from now on; when
// it is unregistered its bytes are added to the totals and, if a
// revocation cut it, the time since the revocation is observed.
func (t *tracker) track(l *liveStream) func() {
	t.mu.Lock()
	if t.live == nil {
		t.live = map[*liveStream]struct{}{}
	}
	t.live[l] = struct{}{}
	t.mu.Unlock()
	if !l.held.Load() {
		t.total[l.pathIndex()].Add(1)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.live, l)
			t.mu.Unlock()
			if m := l.counted(); m != nil {
				t.endedIn.Add(uint64(max(m.in.Load(), 0)))
				t.endedOut.Add(uint64(max(m.out.Load(), 0)))
			}
			if at := l.revokedAt.Load(); at != nil {
				if f := t.onRevokedStreamDone.Load(); f != nil {
					(*f)(time.Since(*at))
				}
			}
		})
	}
}

// started counts a stream held unused until now (liveStream.held) in the
// metrics.
func (t *tracker) started(l *liveStream) {
	if l.held.CompareAndSwap(true, false) {
		t.total[l.pathIndex()].Add(1)
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

// LiveStreams implements access.Live: every stream relayed now (and every
// grant of a direct stream held unused), with its caller, target and
// session, and a way to cut it.
func (s *Server) LiveStreams() []access.LiveStream {
	ls := s.streams.where(func(*liveStream) bool { return true })
	out := make([]access.LiveStream, 0, len(ls))
	for _, l := range ls {
		out = append(out, access.LiveStream{Caller: l.caller, Actor: actorOf(l.caller), Node: l.to, Service: l.service, Session: l.session, Source: l.src,
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

// StreamStats is the streams of one path, for the metrics.
type StreamStats struct {
	Path   string // PathRelayed, PathDirect or PathTCP
	Active int    // tracked now
	Total  uint64 // tracked since the relay started
}

// StreamStats reports the streams tracked now and so far, by path. A
// direct stream counts on the gateway that brokered it and on every other
// gateway its target reported it to (each tracks it, to cut it).
func (s *Server) StreamStats() []StreamStats {
	out := make([]StreamStats, len(paths))
	for i, p := range paths {
		out[i].Path = p
	}
	s.streams.mu.Lock()
	for l := range s.streams.live {
		if !l.held.Load() {
			out[l.pathIndex()].Active++
		}
	}
	s.streams.mu.Unlock()
	for i := range out {
		out[i].Total = s.streams.total[i].Load()
	}
	return out
}

// BytesRelayed reports the bytes the relay carried from callers to
// targets (in) and back (out): those of ended streams and those carried
// so far by open ones. Until the relay counts every relayed stream
// (liveStream.bytes), only SSH sessions' streams are counted.
func (s *Server) BytesRelayed() (in, out uint64) {
	in, out = s.streams.endedIn.Load(), s.streams.endedOut.Load()
	s.streams.mu.Lock()
	for l := range s.streams.live {
		if m := l.counted(); m != nil {
			in += uint64(max(m.in.Load(), 0))
			out += uint64(max(m.out.Load(), 0))
		}
	}
	s.streams.mu.Unlock()
	return in, out
}

// ActiveSessions reports how many bastion sessions have a stream through
// this relay now.
func (s *Server) ActiveSessions() int {
	s.streams.mu.Lock()
	defer s.streams.mu.Unlock()
	seen := map[string]struct{}{}
	for l := range s.streams.live {
		if l.session != "" {
			seen[l.session] = struct{}{}
		}
	}
	return len(seen)
}

// ObserveRevocations makes f observe, for every stream cut because access
// ended (EndSession: a session revoked or expired; EndUser, EndAgent: a
// lock or a revocation), the time from the end being applied to the
// stream being closed. Safe to call at any time.
func (s *Server) ObserveRevocations(f func(time.Duration)) {
	s.streams.onRevokedStreamDone.Store(&f)
}

// ConnStats is the connections of one kind of peer over one transport.
type ConnStats struct {
	Kind      string // "agent" or "user"
	Transport string // "udp", or "tcp" for QUIC over TCP
	Count     int
}

// ConnStats reports the authenticated connections now (agents' current
// and retiring ones, users'), by kind and transport, and how many agents
// are connected.
func (s *Server) ConnStats() (conns []ConnStats, agents int) {
	var n [2][2]int // kind (agent, user) × transport (udp, tcp)
	r := &s.reg
	r.mu.Lock()
	agents = len(r.agents)
	for _, ac := range r.agents {
		n[0][transportIndex(ac.conn.RemoteAddr())]++
	}
	for ac := range r.retiring {
		n[0][transportIndex(ac.conn.RemoteAddr())]++
	}
	for _, cs := range r.userConns {
		for c := range cs {
			n[1][transportIndex(c.RemoteAddr())]++
		}
	}
	r.mu.Unlock()
	for k, kind := range []string{"agent", "user"} {
		for tr, name := range []string{"udp", "tcp"} {
			conns = append(conns, ConnStats{Kind: kind, Transport: name, Count: n[k][tr]})
		}
	}
	return conns, agents
}

// transportIndex is 1 for a connection carried over TCP (QUIC over TCP:
// its peer's address is the TCP connection's), else 0.
func transportIndex(a net.Addr) int {
	if _, ok := a.(*net.TCPAddr); ok {
		return 1
	}
	return 0
}
