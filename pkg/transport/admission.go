package transport

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// DefaultMaxHandshakes is how many QUIC connections a gateway sets up at
// once (from the first packet until the peer is verified) by default.
// Past it, a new connection is refused at its first packet, before any
// cryptography: the peer sees CONNECTION_REFUSED at once and retries with
// backoff. Without the cap, thousands of agents reconnecting to a
// restarted gateway share its CPU so thinly that their handshakes all
// finish late, many past their timeouts (then abandoned and begun again:
// work thrown away), and they finish in bursts that overflow the QUIC
// listener's accept queue (32), which refuses a connection whose
// handshake is already done. It is well above what a gateway sets up at
// once when it keeps up, so that it acts only when it does not. One
// source takes at most the gateway's per-source cap (by default
// netguard's 256, half the slots), so that it alone cannot hold them all.
const DefaultMaxHandshakes = 512

// ErrBusy refuses a connection while the gateway sets up as many as it
// may at once.
var ErrBusy = errors.New("busy: too many connections being set up")

// Admission bounds the connections a QUIC server sets up at once: a
// connection counts from its first packet until Admitted is called with
// its context (the peer is verified) or it ends. The zero value is not
// usable: use NewAdmission.
type Admission struct {
	max     int64
	share   int64 // per source
	n       atomic.Int64
	refused atomic.Int64

	mu     sync.Mutex // guards source
	source map[netip.Addr]int64
}

type admissionKey struct{}

// NewAdmission returns an admission of at most max connections being set
// up at once (DefaultMaxHandshakes if max <= 0), and at most perSource of
// them from one address (half of max if perSource <= 0 or more than that;
// a gateway passes its per-source connection cap, so that an operator who
// lifts it for agents behind one NAT lifts this too, up to max).
func NewAdmission(max, perSource int) *Admission {
	if max <= 0 {
		max = DefaultMaxHandshakes
	}
	share := int64(perSource)
	if share <= 0 || share > int64(max) {
		share = max64(1, int64(max)/2)
		if perSource > max {
			share = int64(max)
		}
	}
	return &Admission{max: int64(max), share: share, source: map[netip.Addr]int64{}}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// ConnContext is a quic.Transport ConnContext: it refuses a connection with
// ErrBusy when max are being set up, and otherwise passes it to next (if
// not nil), counting it until Admitted or its end.
func (a *Admission) ConnContext(next func(context.Context, *quic.ClientInfo) (context.Context, error)) func(context.Context, *quic.ClientInfo) (context.Context, error) {
	return func(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
		ip := sourceOf(info)
		if !a.take(ip) {
			a.refused.Add(1)
			return nil, ErrBusy
		}
		var once sync.Once
		release := func() { once.Do(func() { a.put(ip) }) }
		if next != nil {
			nctx, err := next(ctx, info)
			if err != nil {
				release()
				return nil, err
			}
			ctx = nctx
		}
		ctx = context.WithValue(ctx, admissionKey{}, release)
		context.AfterFunc(ctx, release)
		return ctx, nil
	}
}

// take counts a connection from ip if there is room: fewer than max in
// all, and fewer than the per-source share from ip.
func (a *Admission) take(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n.Load() >= a.max || a.source[ip] >= a.share {
		return false
	}
	a.n.Add(1)
	a.source[ip]++
	return true
}

func (a *Admission) put(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n.Add(-1)
	if a.source[ip]--; a.source[ip] <= 0 {
		delete(a.source, ip)
	}
}

// sourceOf is the address a connection comes from (the zero Addr if
// unknown).
func sourceOf(info *quic.ClientInfo) netip.Addr {
	if info == nil || info.RemoteAddr == nil {
		return netip.Addr{}
	}
	if ua, ok := info.RemoteAddr.(*net.UDPAddr); ok {
		ip, _ := netip.AddrFromSlice(ua.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(info.RemoteAddr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// InProgress is the number of connections being set up now.
func (a *Admission) InProgress() int64 { return a.n.Load() }

// Refused is the number of connections refused as busy so far.
func (a *Admission) Refused() int64 { return a.refused.Load() }

// Admitted ends the setup of the connection whose context is ctx (its
// peer is verified): it no longer counts against the admission. Safe to
// call more than once, and on a context of no admission.
func Admitted(ctx context.Context) {
	if release, ok := ctx.Value(admissionKey{}).(func()); ok {
		release()
	}
}
