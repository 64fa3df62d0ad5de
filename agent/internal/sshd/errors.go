package sshd

import "errors"

// The kinds of EndError, for callers that branch on why a connection ended.
var (
	ErrSessionExpired   = errors.New("session expired")
	ErrIdleTimeout      = errors.New("idle timeout")
	ErrSessionEnded     = errors.New("session ended")
	ErrHandshakeTimeout = errors.New("handshake timeout")
	// ErrInternal: a bug was hit while serving the connection (a panic,
	// recovered); only that connection ends.
	ErrInternal = errors.New("internal error")
)

// EndError is why the server ended a connection; it is the cause of the
// connection's context. Message is what the user was shown; Kind is one of
// ErrSessionExpired, ErrIdleTimeout, ErrSessionEnded, ErrHandshakeTimeout,
// ErrInternal and ErrServerClosed.
type EndError struct {
	Kind    error
	Message string
}

func (e *EndError) Error() string { return e.Message }

func (e *EndError) Unwrap() error { return e.Kind }

// errClientClosed is the cause when the client went away.
var errClientClosed = errors.New("connection closed by the client")
