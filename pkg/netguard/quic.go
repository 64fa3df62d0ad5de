package netguard

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/quic-go/quic-go"
)

// ErrRefused is returned by QUICGate.ConnContext for a connection over a
// cap (quic-go then answers CONNECTION_REFUSED).
var ErrRefused = errors.New("connection refused: too many connections")

// QUICGate bounds a quic.Transport's connections: at most Limits.Total in
// all, and at most Limits.PerSource per source that have not yet
// authenticated (handshaking, or waiting for the application to verify the
// peer). Authenticated connections count only towards the total, so a
// fleet of agents behind one NAT address is not capped; anonymous ones
// from one source are.
//
// When more unauthenticated connections are in flight than one source may
// hold, VerifySourceAddress asks new ones to prove their address first (a
// QUIC Retry: one more round trip), so that spoofed source addresses
// cannot fill another source's share.
type QUICGate struct {
	all     *Limiter
	preauth *Limiter
	retryAt int
}

// NewQUICGate returns a gate; log may be nil.
func NewQUICGate(l Limits, log *slog.Logger) *QUICGate {
	retryAt := l.PerSource
	if retryAt <= 0 {
		retryAt = DefaultPerSource
	}
	return &QUICGate{
		all:     NewLimiter("QUIC", Limits{Total: l.Total}, log),
		preauth: NewLimiter("QUIC unauthenticated", Limits{PerSource: l.PerSource}, log),
		retryAt: retryAt,
	}
}

type preauthKey struct{}

// ConnContext is a quic.Transport ConnContext: it takes the connection's
// slots, or refuses it. The slots are given back when the connection ends
// (quic-go cancels its context then); the per-source one earlier, by
// Authenticated.
func (g *QUICGate) ConnContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	ip := AddrIP(info.RemoteAddr)
	releaseAll, ok := g.all.Acquire(ip, "QUIC")
	if !ok {
		return nil, ErrRefused
	}
	releasePre, ok := g.preauth.Acquire(ip, "QUIC")
	if !ok {
		releaseAll()
		return nil, ErrRefused
	}
	ctx = context.WithValue(ctx, preauthKey{}, releasePre)
	context.AfterFunc(ctx, func() {
		releasePre()
		releaseAll()
	})
	return ctx, nil
}

// VerifySourceAddress is a quic.Transport VerifySourceAddress: true (send
// a Retry) while many unauthenticated connections are in flight.
func (g *QUICGate) VerifySourceAddress(net.Addr) bool {
	return g.preauth.Count() >= g.retryAt
}

// Authenticated gives back the per-source slot of the connection whose
// context is ctx (conn.Context()), once its peer is verified. It does
// nothing for a context the gate did not make. Safe to call twice.
func Authenticated(ctx context.Context) {
	if release, ok := ctx.Value(preauthKey{}).(func()); ok {
		release()
	}
}

// Stats returns the counters of all connections and of unauthenticated
// ones.
func (g *QUICGate) Stats() (all, unauthenticated Stats) {
	return g.all.Stats(), g.preauth.Stats()
}

// Close writes the last refusal summaries. Safe to call twice.
func (g *QUICGate) Close() {
	g.all.Close()
	g.preauth.Close()
}
