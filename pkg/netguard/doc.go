// Package netguard keeps one noisy network source from starving the
// others, before anyone has authenticated: it caps the concurrent
// connections per source address and in total, refuses the excess by
// closing it at once, and logs refusals as one line per burst and one
// summary per minute, never one line per connection.
//
// A source is an IPv4 address, or an IPv6 /64 (the block one subscriber
// usually holds), as in gateway/internal/auth's IPLimiter.
//
// Use:
//
//	lim := netguard.NewLimiter("TCP", netguard.Limits{PerSource: 256, Total: 16000}, log)
//	defer lim.Close()
//	ln = netguard.NewListener(ln, lim, "API")         // a TCP listener
//	gate := netguard.NewQUICGate(limits, log)          // QUIC: on the quic.Transport
//	tr.ConnContext, tr.VerifySourceAddress = gate.ConnContext, gate.VerifySourceAddress
//	...
//	netguard.Authenticated(conn.Context())              // once the peer is verified
//
// [RaiseFileLimit] raises the soft open-file limit to the hard one at start,
// and [DefaultTotal] derives a total budget from it that leaves descriptors
// for everything else the process opens. [ErrorLog] routes net/http's
// error log (TLS handshake noise from scanners, accept errors, panics) to a
// slog.Logger with the same burst summaries.
package netguard
