// Package panics contains a panic at the boundary of one connection or one
// stream, so that a bug reached by one peer ends that peer's connection and
// never the process.
//
// Use it as the first deferred call of every goroutine that serves one
// connection, one stream or one request:
//
//	go func() {
//		defer panics.Recover(log, "jump host connection", conn.Close)
//		serve(conn)
//	}()
//
// Recover logs the panic with its stack, runs the cleanup (closing that one
// connection) and counts it; [Count] is exported as a metric. It must be
// called directly by defer (recover only works there).
package panics

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
)

var recovered atomic.Int64

// Count is the number of panics recovered since the process started.
func Count() int64 { return recovered.Load() }

// Recover stops a panic in the calling goroutine: it logs where (what the
// goroutine served), the value and the stack at error level, calls cleanup
// if it is not nil, and counts the panic. Without a panic it does nothing.
// log may be nil (slog.Default is used). Call it only as `defer
// panics.Recover(...)`.
func Recover(log *slog.Logger, where string, cleanup func() error) {
	r := recover()
	if r == nil {
		return
	}
	Report(log, where, r, debug.Stack())
	if cleanup != nil {
		_ = cleanup()
	}
}

// Report logs and counts a panic value that the caller recovered itself
// (for code that must turn the panic into an error value, such as an HTTP
// middleware).
func Report(log *slog.Logger, where string, value any, stack []byte) {
	recovered.Add(1)
	if log == nil {
		log = slog.Default()
	}
	log.Error("recovered a panic; closed that one connection, the process goes on",
		"where", where, "panic", fmt.Sprint(value), "stack", string(stack))
}
