package pgstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// ErrUnavailable is wrapped by every error that means PostgreSQL could not
// be reached or the connection to it was lost: refused or failed
// connections, TLS failures (an unknown certificate authority, a wrong host
// name), a refused login (the role's password changed), a server shutting
// down or restarting. The error's text says which. The request itself may
// well be fine; tell the user "the gateway cannot reach its store: ..." and
// let them retry.
//
// It is store.ErrUnavailable, so callers need not import this package.
var ErrUnavailable = store.ErrUnavailable

// IsUnavailable reports whether err (from any method of a Store, or from
// Open) means the store could not be reached; see [ErrUnavailable].
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// unavailableError marks err as an ErrUnavailable.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return "PostgreSQL unavailable: " + e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// SQLSTATE codes the store branches on.
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// pgCode returns the SQLSTATE of a server error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isDuplicate(err error) bool  { return pgCode(err) == codeUniqueViolation }
func isForeignKey(err error) bool { return pgCode(err) == codeForeignKeyViolation }

// classify wraps err in ErrUnavailable if it means the store could not be
// reached.
func classify(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || !connectionLost(ctx, err) {
		return err
	}
	return &unavailableError{err}
}

// connectionLost reports whether err means that PostgreSQL could not be
// reached or the connection to it broke, as opposed to a refusal of the
// request or the caller giving up (ctx done).
func connectionLost(ctx context.Context, err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return !errors.Is(err, context.Canceled)
	}
	if ctx.Err() != nil {
		return false
	}
	if code := pgCode(err); code != "" {
		// Class 08: connection exception. 57P01..57P03: the server is
		// shutting down, crashed, or not accepting connections yet.
		return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03"
	}
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) ||
		pgconn.Timeout(err)
}

// retryable reports whether a transaction that failed with err may be run
// again: a serialization failure or deadlock (the server rolled it back), or
// a connection lost before COMMIT was sent (so it cannot have committed).
// A failure to connect at all is not retried here: pgxpool already waited
// for it, up to connect_timeout.
func retryable(ctx context.Context, err error, beforeCommit bool) bool {
	if ctx.Err() != nil {
		return false
	}
	switch pgCode(err) {
	case codeSerializationFailure, codeDeadlockDetected:
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return false
	}
	return beforeCommit && connectionLost(ctx, err)
}
