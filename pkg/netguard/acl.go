package netguard

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// Scope is a set of the listeners a network rule applies to.
type Scope uint8

// Listeners. A rule's Scope may hold several; a connection arrives
// through exactly one.
const (
	ScopeAPI  Scope = 1 << iota // the HTTPS API (and the QUIC over TCP it carries)
	ScopeQUIC                   // QUIC, over UDP and over TCP
	ScopeSSH                    // the SSH jump host
	ScopeAll  = ScopeAPI | ScopeQUIC | ScopeSSH
)

// scopes are the single listeners, in the order of aclSet's arrays.
var scopes = [...]Scope{ScopeAPI, ScopeQUIC, ScopeSSH}

func (s Scope) String() string {
	switch s {
	case ScopeAPI:
		return "api"
	case ScopeQUIC:
		return "quic"
	case ScopeSSH:
		return "ssh"
	case ScopeAll:
		return "all"
	}
	return "listeners"
}

// ACLRule allows or denies the sources in Prefix on the listeners in
// Scope.
type ACLRule struct {
	Deny   bool
	Prefix netip.Prefix
	Scope  Scope
}

// ErrDenied is returned by ACL.ConnContext for a source the rules refuse
// (quic-go then answers CONNECTION_REFUSED before any handshake).
var ErrDenied = errors.New("connection refused: the source network is not allowed")

// ReasonDenied is the reason logged, and given to the cut functions of
// live connections, for a source the network rules refuse.
const ReasonDenied = "source network not allowed by the gateway's network rules"

// aclSet is one immutable rule set, per listener.
type aclSet struct {
	deny  [len(scopes)][]netip.Prefix
	allow [len(scopes)][]netip.Prefix
}

func scopeIndex(s Scope) int {
	for i, x := range scopes {
		if x == s {
			return i
		}
	}
	return -1
}

// allowed applies the rules of one listener to ip: a deny rule that
// matches refuses; then, if the listener has allow rules, only a match
// admits; with none, every source does.
func (set *aclSet) allowed(ip netip.Addr, s Scope) bool {
	if set == nil {
		return true
	}
	i := scopeIndex(s)
	if i < 0 {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range set.deny[i] {
		if p.Contains(ip) {
			return false
		}
	}
	if len(set.allow[i]) == 0 {
		return true
	}
	for _, p := range set.allow[i] {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ACL enforces network allow/deny rules on listeners, at the earliest
// point each offers: a TCP connection is reset as it is accepted (before
// TLS or SSH), a QUIC connection is refused by the transport before its
// handshake. The rule set is swapped atomically (Set): a check takes no
// lock. Refusals are counted and logged as one line per burst and one
// summary per minute, never one line per connection.
//
// Connections admitted are tracked, so that Set cuts the live ones whose
// source the new rules refuse: the TCP connections of ACL.Listener at
// once, and the QUIC connections whose owner registered how to close them
// (CutOnDeny).
type ACL struct {
	set   atomic.Pointer[aclSet]
	log   *slog.Logger
	burst *burst

	refused atomic.Int64

	mu    sync.Mutex // guards conns
	conns map[*tracked]struct{}
}

// tracked is one live connection.
type tracked struct {
	ip    netip.Addr
	scope Scope

	mu  sync.Mutex
	cut func(reason string) // nil until the owner registers it (QUIC)
	// denied: the rules refused the source; a cut registered later runs
	// at once.
	denied bool
}

// NewACL returns an ACL that admits everything until Set; log may be nil.
func NewACL(log *slog.Logger) *ACL {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &ACL{log: log, conns: map[*tracked]struct{}{}}
	a.burst = newBurst(SummaryInterval, a.summarise)
	return a
}

// Set replaces the rules, and cuts the tracked live connections the new
// rules refuse. It returns how many it cut (a QUIC connection whose owner
// has not registered a cut yet is marked, and cut on registration, but
// not counted). Rules with an invalid prefix are ignored.
func (a *ACL) Set(rules []ACLRule) int {
	set := &aclSet{}
	for _, r := range rules {
		if !r.Prefix.IsValid() {
			continue
		}
		p := r.Prefix.Masked()
		for i, s := range scopes {
			if r.Scope&s == 0 {
				continue
			}
			if r.Deny {
				set.deny[i] = append(set.deny[i], p)
			} else {
				set.allow[i] = append(set.allow[i], p)
			}
		}
	}
	a.set.Store(set)
	// A connection tracked before this point is seen below; one tracked
	// after it checks the new set itself (track, then check).
	a.mu.Lock()
	var cut []*tracked
	for t := range a.conns {
		if !set.allowed(t.ip, t.scope) {
			cut = append(cut, t)
		}
	}
	a.mu.Unlock()
	n := 0
	for _, t := range cut {
		if t.deny() {
			n++
		}
	}
	return n
}

// Allowed reports whether the rules admit ip on the listener s (one of
// ScopeAPI, ScopeQUIC, ScopeSSH).
func (a *ACL) Allowed(ip netip.Addr, s Scope) bool {
	return a.set.Load().allowed(ip, s)
}

// Refused returns how many connections the rules refused so far.
func (a *ACL) Refused() int64 { return a.refused.Load() }

// Live returns how many admitted connections are tracked now.
func (a *ACL) Live() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}

func (a *ACL) refuse(ip netip.Addr, s Scope, via string) {
	a.refused.Add(1)
	if a.burst.note(via, SourceKey(ip), "") {
		a.log.Warn("refusing connections: "+ReasonDenied+"; further refusals are summarised every minute",
			"listener", via, "scope", s.String(), "source", ip.String())
	}
}

func (a *ACL) summarise(via string, t *tally) {
	top, n := t.busiest()
	a.log.Warn("refused connections: "+ReasonDenied, "listener", via, "refused", t.count,
		"sources", len(t.sources), "busiest_source", top.String(), "busiest_refused", n,
		"interval", a.burst.interval.String())
}

// track records a live connection; the returned function forgets it.
func (a *ACL) track(t *tracked) (untrack func()) {
	a.mu.Lock()
	a.conns[t] = struct{}{}
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		delete(a.conns, t)
		a.mu.Unlock()
	}
}

// deny marks t refused and runs its cut, if registered (then it reports
// true).
func (t *tracked) deny() bool {
	t.mu.Lock()
	t.denied = true
	cut := t.cut
	t.mu.Unlock()
	if cut != nil {
		cut(ReasonDenied)
	}
	return cut != nil
}

// Close writes the last refusal summary; the ACL goes on checking. Safe
// to call twice.
func (a *ACL) Close() { a.burst.Close() }

// Listener wraps ln so that connections from sources the rules refuse on
// s are reset as they are accepted and never returned; name says which
// listener it is in the log ("API", "jump host"). The connections it
// returns are cut (closed) when a later Set refuses their source. Wrap
// the raw listener, under a Limiter's (NewListener), so that a refused
// connection never takes a slot.
func (a *ACL) Listener(ln net.Listener, s Scope, name string) net.Listener {
	return &aclListener{Listener: ln, acl: a, scope: s, name: name}
}

type aclListener struct {
	net.Listener
	acl   *ACL
	scope Scope
	name  string
}

func (l *aclListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := AddrIP(c.RemoteAddr())
		t := &tracked{ip: ip, scope: l.scope}
		ac := &aclConn{Conn: c}
		t.cut = func(string) { reset(c) }
		ac.untrack = l.acl.track(t)
		if !l.acl.Allowed(ip, l.scope) {
			ac.untrack()
			reset(c)
			l.acl.refuse(ip, l.scope, l.name)
			continue
		}
		return ac, nil
	}
}

// aclConn forgets its tracking when closed.
type aclConn struct {
	net.Conn
	untrack func()
	once    sync.Once
}

func (c *aclConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.untrack)
	return err
}

// CloseWrite half-closes a TCP connection.
func (c *aclConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the underlying connection.
func (c *aclConn) NetConn() net.Conn { return c.Conn }

type aclKey struct{}

// ConnContext returns a quic.Transport ConnContext that refuses sources
// the rules refuse on s (with ErrDenied: quic-go answers
// CONNECTION_REFUSED, before the handshake), then calls next (nil: none),
// typically QUICGate.ConnContext. Admitted connections are tracked until
// they end; register how to close one with CutOnDeny.
func (a *ACL) ConnContext(s Scope, name string, next func(context.Context, *quic.ClientInfo) (context.Context, error)) func(context.Context, *quic.ClientInfo) (context.Context, error) {
	return func(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
		ip := AddrIP(info.RemoteAddr)
		if !a.Allowed(ip, s) {
			a.refuse(ip, s, name)
			return nil, ErrDenied
		}
		if next != nil {
			var err error
			if ctx, err = next(ctx, info); err != nil {
				return nil, err
			}
		}
		t := &tracked{ip: ip, scope: s}
		untrack := a.track(t)
		context.AfterFunc(ctx, untrack)
		if !a.Allowed(ip, s) { // the rules changed meanwhile
			t.deny()
		}
		return context.WithValue(ctx, aclKey{}, t), nil
	}
}

// CutOnDeny registers cut to close the QUIC connection whose context is
// ctx (conn.Context()) when the network rules come to refuse its source;
// if they already do, cut runs now. It does nothing for a context the
// ACL did not make. The returned function unregisters it. cut runs in the
// goroutine of Set and must not block long (conn.CloseWithError is fine).
// The owner of the connection calls it once the connection is accepted:
//
//	defer netguard.CutOnDeny(conn.Context(), func(reason string) {
//		conn.CloseWithError(code, reason)
//	})()
func CutOnDeny(ctx context.Context, cut func(reason string)) (stop func()) {
	t, ok := ctx.Value(aclKey{}).(*tracked)
	if !ok {
		return func() {}
	}
	t.mu.Lock()
	t.cut = cut
	denied := t.denied
	t.mu.Unlock()
	if denied {
		cut(ReasonDenied)
	}
	return func() {
		t.mu.Lock()
		t.cut = nil
		t.mu.Unlock()
	}
}
