package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Direct streams decided ahead (wire.DirectAhead). Once a client's
// connection to a target took the direct path, the agent asks a gateway
// at once for that target's next stream, and holds the grant (its lease
// and ticket) for aheadTTL. The next client connection to the target then
// starts without the gateway's round trip and audit write on the way of
// its first byte: the agent sends wire.AheadUsed on the lease and opens
// the peer stream under the ticket, which the target was told of and
// whose audit event is durable already. So every stream is still decided
// and audited by a gateway before its bytes flow; a revocation or an
// access change cuts a grant held as it cuts a stream (the gateway resets
// the lease); and a grant not used in time ends, which the gateway audits
// (stream.unused).

const (
	// aheadTTL is how long a grant is held unused: under wire.AheadHold,
	// after which a gateway voids it, and expectTTL, after which the
	// target forgets the announcement (TestAheadTTLs).
	aheadTTL = 20 * time.Second
	// aheadRefusedFor is how long the agent does not ask again for a
	// target the gateway would not decide ahead (a service that logs in
	// for the caller, a target without the direct path).
	aheadRefusedFor = time.Minute
)

// aheadGrant is one grant held for a target's next stream.
type aheadGrant struct {
	target string
	lease  *quic.Stream
	grant  wire.Control
	timer  *time.Timer
	// watched is closed when the watch of the lease returns; dead says
	// the lease ended there (a cut, the gateway gone): the grant is void.
	watched chan struct{}
	dead    atomic.Bool
	endOnce sync.Once
}

// end gives the grant up: the lease is closed with nothing sent, which
// tells the gateway it went unused. Safe twice.
func (g *aheadGrant) end() {
	g.endOnce.Do(func() {
		_ = g.lease.Close()
		g.lease.CancelRead(transport.StreamCanceled)
	})
}

// aheadGrants holds an agent's grants decided ahead, one per target at
// most.
type aheadGrants struct {
	a       *Agent
	mu      sync.Mutex
	held    map[string]*aheadGrant // target (NODE/SERVICE) → its grant
	asking  map[string]bool
	refused map[string]time.Time // target → when it may be asked for again
	closed  bool
	// off: a gateway answered an ahead request by relaying it (one older
	// than this agent): the agent asks no more.
	off atomic.Bool
	wg  sync.WaitGroup
}

func newAheadGrants(a *Agent) *aheadGrants {
	return &aheadGrants{a: a, held: map[string]*aheadGrant{}, asking: map[string]bool{}, refused: map[string]time.Time{}}
}

// take returns the grant held for target, started (wire.AheadUsed sent
// on its lease), or nil if there is none or it is void.
func (h *aheadGrants) take(target string) *aheadGrant {
	h.mu.Lock()
	g := h.held[target]
	delete(h.held, target)
	h.mu.Unlock()
	if g == nil {
		return nil
	}
	g.timer.Stop()
	// Wake the watch and take the lease over from it.
	_ = g.lease.SetReadDeadline(time.Now())
	<-g.watched
	_ = g.lease.SetReadDeadline(time.Time{})
	if g.dead.Load() {
		g.end()
		return nil
	}
	if _, err := g.lease.Write([]byte{wire.AheadUsed}); err != nil {
		transport.Stream{Stream: g.lease}.Abort()
		return nil
	}
	return g
}

// ask asks a gateway, in the background, for target's next stream, unless
// a grant for it is held or being asked for, or the gateway would refuse.
func (h *aheadGrants) ask(target string) {
	if h == nil || h.off.Load() || !h.a.gwAhead.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.asking[target] || h.held[target] != nil || time.Now().Before(h.refused[target]) {
		return
	}
	h.asking[target] = true
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		g, err := h.request(h.a.ctx, target)
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.asking, target)
		var ref *aheadRefused
		switch {
		case errors.As(err, &ref):
			h.refused[target] = time.Now().Add(aheadRefusedFor)
			h.a.log.Debug("the gateway does not decide this target's streams ahead", "target", target, "reason", ref.reason)
			return
		case err != nil:
			h.a.log.Debug("cannot get a direct stream decided ahead", "target", target, "err", err)
			return
		case h.closed || h.held[target] != nil:
			g.end()
			return
		}
		h.held[target] = g
		g.timer = time.AfterFunc(aheadTTL, func() { h.expire(g) })
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.watch(g)
		}()
	}()
}

// aheadRefused: the gateway would not decide a target's streams ahead.
type aheadRefused struct{ reason string }

func (e *aheadRefused) Error() string { return e.reason }

// request asks a gateway for a direct stream to target decided ahead and
// returns its grant, not yet watched.
func (h *aheadGrants) request(ctx context.Context, target string) (*aheadGrant, error) {
	node, _, _ := strings.Cut(target, "/")
	octx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	defer cancel()
	lease, err := h.a.OpenStream(octx)
	if err != nil {
		return nil, err
	}
	rep, grant, err := askDirect(lease, target, node, wire.DirectAhead, wire.NewTicket())
	switch {
	case err != nil:
		transport.Stream{Stream: lease}.Abort()
		return nil, err
	case rep.Status == wire.StatusOK:
		// A gateway older than this agent relays the stream: it is no
		// use without a client.
		h.off.Store(true)
		transport.Stream{Stream: lease}.Abort()
		return nil, errors.New("the gateway relayed a stream asked for ahead: it does not decide streams ahead")
	case rep.Status != wire.StatusDirect:
		_ = lease.Close()
		lease.CancelRead(transport.StreamCanceled)
		if rep.Status == wire.StatusUnavailable {
			return nil, &aheadRefused{rep.Err().Error()}
		}
		return nil, fmt.Errorf("the gateway refused a stream asked for ahead: %w", rep.Err())
	}
	return &aheadGrant{target: target, lease: lease, grant: grant, watched: make(chan struct{})}, nil
}

// watch reads g's lease until take wakes it (a read deadline) or the
// lease ends: a reset by the gateway (a cut; its target gone) or the
// gateway's connection lost. Then the grant is void and dropped.
func (h *aheadGrants) watch(g *aheadGrant) {
	defer close(g.watched)
	_, err := io.Copy(io.Discard, io.LimitReader(g.lease, 1<<16))
	if isTimeout(err) {
		return // take's wake-up
	}
	g.dead.Store(true)
	h.mu.Lock()
	if h.held[g.target] == g {
		delete(h.held, g.target)
		g.timer.Stop()
	}
	h.mu.Unlock()
	g.end()
}

// expire ends g if it is still held unused.
func (h *aheadGrants) expire(g *aheadGrant) {
	h.mu.Lock()
	held := h.held[g.target] == g
	if held {
		delete(h.held, g.target)
	}
	h.mu.Unlock()
	if held {
		g.end()
	}
}

// dropAll ends every grant held (after a renewal: they name the
// certificate the agent had); close does too, asks for no more, and
// waits for the requests and watches in flight. Both are safe on nil.
func (h *aheadGrants) dropAll() { h.drop(false) }

func (h *aheadGrants) close() { h.drop(true) }

func (h *aheadGrants) drop(closing bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	if closing {
		h.closed = true
	}
	held := h.held
	h.held = map[string]*aheadGrant{}
	h.mu.Unlock()
	for _, g := range held {
		g.timer.Stop()
		g.end()
	}
	if closing {
		h.wg.Wait()
	}
}
