package transport

import (
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Hearing follows whether a QUIC connection still hears its peer: Look,
// called about every beat by the connection's owner, notes when the
// connection last received a packet (to the precision of the looks), and
// Quiet says whether it has heard nothing for longer than Silence(beat).
// A live peer answers every keepalive (KeepAlive), so a quiet connection
// is one whose peer may have died without a word, seconds before its idle
// timeout says so. Safe for concurrent use: one goroutine looks, any asks.
type Hearing struct {
	conn    *quic.Conn
	silence time.Duration
	heard   atomic.Uint64 // packets received at the last look that saw more
	at      atomic.Int64  // when (Unix nanoseconds)
}

// NewHearing follows c, looked at about every beat, from now.
func NewHearing(c *quic.Conn, beat time.Duration, now time.Time) *Hearing {
	h := &Hearing{conn: c, silence: Silence(beat)}
	h.heard.Store(c.ConnectionStats().PacketsReceived)
	h.at.Store(now.UnixNano())
	return h
}

// Look notes whether the connection received a packet since the last
// look, and returns how long it has heard nothing, as far as the looks
// know.
func (h *Hearing) Look(now time.Time) time.Duration {
	if n := h.conn.ConnectionStats().PacketsReceived; n != h.heard.Load() {
		h.heard.Store(n)
		h.at.Store(now.UnixNano())
		return 0
	}
	return now.Sub(time.Unix(0, h.at.Load()))
}

// Quiet reports whether the connection, still open, has heard nothing for
// longer than Silence(beat) at now. A nil Hearing is never quiet, nor is a
// connection that ended (its owner knows that already).
func (h *Hearing) Quiet(now time.Time) bool {
	return h != nil && h.conn.Context().Err() == nil && now.Sub(time.Unix(0, h.at.Load())) >= h.silence
}

// Watch looks every Beat until the connection ends (for an owner with
// nothing else to do every beat).
func (h *Hearing) Watch() {
	t := time.NewTicker(Beat)
	defer t.Stop()
	for {
		select {
		case <-h.conn.Context().Done():
			return
		case now := <-t.C:
			h.Look(now)
		}
	}
}
