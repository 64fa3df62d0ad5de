package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/panics"
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
//
// The gateway cuts a stream in both directions at once: RESET_STREAM ends
// the direction towards us, STOP_SENDING ours. The two frames may arrive
// in two packets, and when RESET_STREAM is first the forwarder's splice
// reads its error and resets the stream itself, so that our send direction
// ends with our own reset before STOP_SENDING can say why. A stream's
// context tells only how its send direction ended: the reporter therefore
// also keeps how the receive direction ended (carry, which the forwarder
// uses instead of its own relaying), and reports that when the send
// direction ended by our own reset.
type cutReporter struct {
	opener transport.StreamOpener
	target string
	out    io.Writer
	// localCause, if set, says why this side cut its own streams (the
	// login certificate expired); nil for an ordinary stop.
	localCause func() error
	// denied, if set, is told when the gateway closed the connection
	// because it no longer accepts the login certificate (locked, revoked,
	// removed: CodeUnauthorized, CodeRevoked), seen on a stream's end or
	// on a new stream: every later stream would be refused too.
	denied func(*quic.ApplicationError)

	mu    sync.Mutex // guards stops, recv and the writes to out
	stops map[*quic.Stream]func() bool
	// recv is how the gateway ended the receive direction of streams still
	// watched (a reset with its code), kept until their report.
	recv map[*quic.Stream]error
	wg   sync.WaitGroup // one per stream still watched
}

// OpenStream implements transport.StreamOpener.
func (r *cutReporter) OpenStream(ctx context.Context) (*quic.Stream, error) {
	st, err := r.opener.OpenStream(ctx)
	if err != nil {
		r.checkDenied(err)
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
		cause := context.Cause(sctx)
		var own *quic.StreamError
		if recv := r.recv[st]; recv != nil && errors.As(cause, &own) && !own.Remote {
			// Our reset answered the gateway's: say why it came.
			cause = recv
		}
		delete(r.recv, st)
		var local error
		if r.localCause != nil {
			local = r.localCause()
		}
		if line := cutMessage(r.target, cause, local); line != "" {
			fmt.Fprintln(r.out, line)
		}
		r.checkDenied(cause)
	})
	r.mu.Unlock()
	return st, nil
}

// checkDenied tells denied if err says the gateway no longer accepts the
// login certificate.
func (r *cutReporter) checkDenied(err error) {
	var ae *quic.ApplicationError
	if r.denied != nil && errors.As(err, &ae) && ae.Remote &&
		(ae.ErrorCode == transport.CodeUnauthorized || ae.ErrorCode == transport.CodeRevoked) {
		r.denied(ae)
	}
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
		delete(r.recv, st)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// received records that the gateway ended the receive direction of st
// with err (a reset), if st is still watched.
func (r *cutReporter) received(st *quic.Stream, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.stops[st]; !ok {
		return // reported already
	}
	if r.recv == nil {
		r.recv = map[*quic.Stream]error{}
	}
	if r.recv[st] == nil {
		r.recv[st] = err
	}
}

// carry is the forwarder's Carry for tunnel proxy: what
// transport.Forwarder.Relay does (a stream opened through the reporter,
// the dial header, the gateway's reply awaited before the first byte, a
// splice until both ends are done), with the stream's receive direction
// watched so that a cut the gateway announced there is reported (see
// cutReporter).
func (r *cutReporter) carry(log *slog.Logger) func(ctx context.Context, local transport.TCP) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, local transport.TCP) {
		var st *quic.Stream
		// A panic ends this one connection (both ends reset), never the
		// process.
		defer panics.Recover(log, "local listener connection to "+r.target, func() error {
			local.Abort()
			if st != nil {
				transport.Stream{Stream: st}.Abort()
			}
			return nil
		})
		octx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
		s, err := r.OpenStream(octx)
		cancel()
		if err != nil {
			log.Warn("cannot reach the gateway; connection refused", "target", r.target, "err", err)
			local.Abort()
			return
		}
		st = s
		remote := transport.Stream{Stream: st}
		// The header goes out at once and the client's first bytes follow
		// it: the gateway holds them until the stream is authorised.
		if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindDial, Target: r.target}); err != nil {
			log.Warn("open stream", "target", r.target, "err", err)
			local.Abort()
			remote.Abort()
			return
		}
		stop := context.AfterFunc(ctx, func() { remote.Abort(); local.Abort() })
		defer stop()
		res := transport.Splice(local, &recvWatch{Endpoint: transport.AwaitReply(st, r.target, log), r: r, st: st})
		if res.Err != nil && ctx.Err() == nil {
			log.Debug("connection ended with an error", "target", r.target, "err", res.Err)
		}
	}
}

// recvWatch is the gateway's side of a proxied connection: it tells the
// reporter when the gateway reset the stream, before the splice answers
// with a reset of its own.
type recvWatch struct {
	transport.Endpoint
	r  *cutReporter
	st *quic.Stream
}

func (w *recvWatch) Read(p []byte) (int, error) {
	n, err := w.Endpoint.Read(p)
	var se *quic.StreamError
	if err != nil && errors.As(err, &se) && se.Remote {
		w.r.received(w.st, se)
	}
	return n, err
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
