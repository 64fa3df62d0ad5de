package store

import (
	"context"
	"errors"
	"sync/atomic"
)

type unavailableKey struct{}

// UnavailableNote records whether a store call made under a context failed
// because the store could not be reached; see WithUnavailableNote.
type UnavailableNote struct {
	err atomic.Pointer[error]
}

// Err returns the first ErrUnavailable error noted, or nil.
func (n *UnavailableNote) Err() error {
	if p := n.err.Load(); p != nil {
		return *p
	}
	return nil
}

// WithUnavailableNote returns a context under which stores note an
// ErrUnavailable they return (NoteUnavailable), so that the layer that
// answers a request can tell "the gateway cannot reach its store" from any
// other failure even when the error was wrapped into another on the way.
func WithUnavailableNote(ctx context.Context) (context.Context, *UnavailableNote) {
	n := &UnavailableNote{}
	return context.WithValue(ctx, unavailableKey{}, n), n
}

// NoteUnavailable records err in ctx's note if err is an ErrUnavailable,
// and returns err unchanged. Store implementations call it on their
// errors.
func NoteUnavailable(ctx context.Context, err error) error {
	if err == nil || !errors.Is(err, ErrUnavailable) {
		return err
	}
	if n, ok := ctx.Value(unavailableKey{}).(*UnavailableNote); ok {
		n.err.CompareAndSwap(nil, &err)
	}
	return err
}

// UnavailableNoted returns the first ErrUnavailable error noted under ctx
// (a context from WithUnavailableNote, or one derived from it), or nil.
func UnavailableNoted(ctx context.Context) error {
	if n, ok := ctx.Value(unavailableKey{}).(*UnavailableNote); ok {
		return n.Err()
	}
	return nil
}

// UnavailableMessage is the one sentence for a person whose request needed
// the store while it could not be reached (the cause, which may name the
// database host, goes to the gateway's log).
const UnavailableMessage = "the gateway cannot reach its store: nothing was changed, try again in a moment"

// Sentence returns UnavailableMessage if err says the store could not be
// reached, and otherwise otherwise.
func Sentence(err error, otherwise string) string {
	if errors.Is(err, ErrUnavailable) {
		return UnavailableMessage
	}
	return otherwise
}
