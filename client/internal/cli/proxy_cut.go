package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// cutReporter is the StreamOpener of tunnel proxy: it opens streams with
// the one below and, for each, writes one line to out when the stream
// ends because the gateway cut it (a revocation, an expired certificate,
// the gateway going away), so that the person whose psql just died knows
// why:
//
//	connection to db-1/postgres closed by the gateway: access revoked by an administrator
//
// Ends the client or the service chose (a close, a reset) are not
// reported. Close waits for every report.
type cutReporter struct {
	opener transport.StreamOpener
	target string
	out    io.Writer
	// localCause, if set, says why this side cut its own streams (the
	// login certificate expired); nil for an ordinary stop.
	localCause func() error

	mu    sync.Mutex // guards stops and the writes to out
	stops map[*quic.Stream]func() bool
	wg    sync.WaitGroup // one per stream still watched
}

// OpenStream implements transport.StreamOpener.
func (r *cutReporter) OpenStream(ctx context.Context) (*quic.Stream, error) {
	st, err := r.opener.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	// A stream's context ends with the cause of the end of its send
	// direction: our own close or reset, the peer's STOP_SENDING, or the
	// connection's end.
	sctx := st.Context()
	r.wg.Add(1)
	r.mu.Lock()
	if r.stops == nil {
		r.stops = map[*quic.Stream]func() bool{}
	}
	r.stops[st] = context.AfterFunc(sctx, func() {
		defer r.wg.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.stops, st)
		var local error
		if r.localCause != nil {
			local = r.localCause()
		}
		if line := cutMessage(r.target, context.Cause(sctx), local); line != "" {
			fmt.Fprintln(r.out, line)
		}
	})
	r.mu.Unlock()
	return st, nil
}

// Close stops watching the streams still open and waits for the reports
// under way. Safe to call twice.
func (r *cutReporter) Close() {
	r.mu.Lock()
	for st, stop := range r.stops {
		if stop() {
			r.wg.Done()
		}
		delete(r.stops, st)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// cutMessage says why the stream to target ended, given the cause its
// context ended with; "" when there is nothing to tell (the client or
// the service ended it, tunnel proxy is stopping). local is why this side
// cut it, if it did so for a reason worth telling.
func cutMessage(target string, cause, local error) string {
	var (
		se *quic.StreamError
		ae *quic.ApplicationError
		ie *quic.IdleTimeoutError
		sr *quic.StatelessResetError
	)
	switch {
	case errors.As(cause, &se) && se.Remote:
		reason, ok := wire.CutReason(uint64(se.ErrorCode))
		if !ok {
			// A reset: the service or the client's peer ended it.
			return ""
		}
		if uint64(se.ErrorCode) == wire.CutExpired {
			reason += ": run tunnel login, then start tunnel proxy again"
		}
		return fmt.Sprintf("connection to %s closed by the gateway: %s", target, reason)
	case errors.As(cause, &ae) && ae.Remote:
		// The gateway closed the whole connection, with a sentence.
		msg := ae.ErrorMessage
		if msg == "" {
			msg = "no reason given"
		}
		if ae.ErrorCode == transport.CodeUnauthorized {
			msg += " (run tunnel login, then start tunnel proxy again)"
		}
		return fmt.Sprintf("connection to %s closed by the gateway: %s", target, msg)
	case errors.As(cause, &ie):
		return fmt.Sprintf("connection to %s lost: the gateway stopped answering", target)
	case errors.As(cause, &sr):
		return fmt.Sprintf("connection to %s lost: the gateway restarted", target)
	case local != nil:
		return fmt.Sprintf("connection to %s closed: %v", target, local)
	}
	return ""
}
