package netguard

import (
	"context"
	"log"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
)

// ErrorLog is an http.Server ErrorLog that writes to a slog.Logger, at a
// level by kind, and at most one line per kind per burst plus one summary
// per minute while the burst lasts:
//
//   - TLS handshake errors (scanners, load balancers' TCP checks, clients
//     that do not trust the certificate, stalled handshakes cut by the
//     deadline): debug;
//   - accept errors ("too many open files"): warn;
//   - panics that reached net/http: error, every one;
//   - anything else: warn.
//
// Close writes the pending summaries.
type ErrorLog struct {
	log   *slog.Logger
	burst *burst
	// tlsErrors counts the lines of kind "TLS handshake error".
	tlsErrors atomic.Int64
}

// TLSHandshakeErrors is the number of TLS handshake errors logged so far
// (the gateway's metrics read it).
func (e *ErrorLog) TLSHandshakeErrors() int64 { return e.tlsErrors.Load() }

// NewErrorLog returns an ErrorLog writing to l (nil: discard).
func NewErrorLog(l *slog.Logger) *ErrorLog {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	e := &ErrorLog{log: l}
	e.burst = newBurst(SummaryInterval, e.summarise)
	return e
}

// Logger returns the *log.Logger to set as http.Server.ErrorLog.
func (e *ErrorLog) Logger() *log.Logger { return log.New(errorWriter{e}, "", 0) }

// Close writes the pending summaries. Safe to call twice.
func (e *ErrorLog) Close() { e.burst.Close() }

type errorWriter struct{ e *ErrorLog }

func (w errorWriter) Write(p []byte) (int, error) {
	w.e.line(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// kinds of lines, with their level.
var errorKinds = []struct {
	kind   string
	marker string
	level  slog.Level
}{
	{"TLS handshake error", "TLS handshake error", slog.LevelDebug},
	{"accept error", "Accept error", slog.LevelWarn},
}

func (e *ErrorLog) line(msg string) {
	if strings.Contains(msg, "http: panic serving") {
		e.log.Error("HTTP server: recovered a panic; closed that one connection, the process goes on", "msg", msg)
		return
	}
	kind, level := "other", slog.LevelWarn
	for _, k := range errorKinds {
		if strings.Contains(msg, k.marker) {
			kind, level = k.kind, k.level
			break
		}
	}
	if kind == "TLS handshake error" {
		e.tlsErrors.Add(1)
	}
	if e.burst.note(kind, netip.Addr{}, msg) {
		e.log.Log(context.Background(), level, "HTTP server: "+kind+"; like ones are summarised every minute", "msg", msg)
	}
}

func (e *ErrorLog) summarise(kind string, t *tally) {
	level := slog.LevelWarn
	for _, k := range errorKinds {
		if k.kind == kind {
			level = k.level
		}
	}
	e.log.Log(context.Background(), level, "HTTP server: "+kind+" (summary)", "count", t.count,
		"interval", e.burst.interval.String(), "last", t.sample)
}
