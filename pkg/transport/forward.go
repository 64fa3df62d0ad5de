package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// StreamOpener opens a stream on the current connection to the gateway.
// It fails fast (ErrNotConnected) while there is none.
type StreamOpener interface {
	OpenStream(ctx context.Context) (*quic.Stream, error)
}

// ErrNotConnected is returned by an opener with no live connection.
var ErrNotConnected = errors.New("not connected to the gateway")

// Forwarder accepts local TCP connections and carries each over a new
// stream to Target through the gateway. Serve owns every goroutine it
// starts and returns after they end.
type Forwarder struct {
	Listener net.Listener
	Opener   StreamOpener
	// Target is "node/service".
	Target string
	Log    *slog.Logger
	// Allow, if set, is asked before each connection is carried; an error
	// refuses the connection and is logged (for example an expired
	// certificate). If it returns ErrStop the forwarder stops.
	Allow func() error
	// Carry, if set, carries each accepted connection instead of the
	// relayed path (the agent's direct path); it may hand a connection back
	// to the relay with Relay. It owns local, and must end or reset it.
	Carry func(ctx context.Context, local TCP)
}

// ErrStop, returned by Allow, stops the forwarder.
var ErrStop = errors.New("forwarder stopped")

// Serve accepts until ctx ends, Allow says stop, or the listener fails. It
// closes the listener and aborts the connections still open on return. A
// panic while serving one connection (or in Allow) is recovered: that
// connection is reset, logged with its stack, and the listener goes on.
func (f *Forwarder) Serve(ctx context.Context) error {
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	// On return, whatever the reason: cancel, which closes the listener
	// and aborts the connections still open, then wait for every goroutine.
	defer wg.Wait()
	defer cancel(nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		f.Listener.Close()
	}()
	for {
		c, err := f.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				if cause := context.Cause(ctx); errors.Is(cause, ErrStop) {
					return cause
				}
				return nil
			}
			return fmt.Errorf("accept on %s: %w", f.Listener.Addr(), err)
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		if f.Allow != nil {
			if err := f.allow(log); err != nil {
				TCP{tc}.Abort()
				if errors.Is(err, ErrStop) {
					log.Error("listener stops", "listen", f.Listener.Addr().String(), "target", f.Target, "err", err)
					cancel(err)
					continue
				}
				log.Warn("connection refused", "target", f.Target, "err", err)
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.Carry == nil {
				f.Relay(ctx, TCP{tc})
				return
			}
			defer panics.Recover(log, "local listener connection to "+f.Target, func() error {
				TCP{tc}.Abort()
				return nil
			})
			f.Carry(ctx, TCP{tc})
		}()
	}
}

// allow calls Allow, turning a panic into a refusal of the connection.
func (f *Forwarder) allow(log *slog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			panics.Report(log, "local listener "+f.Listener.Addr().String()+" (Allow)", r, debug.Stack())
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return f.Allow()
}

// Relay carries local through the gateway: a dial stream from Opener,
// spliced to local until either ends.
func (f *Forwarder) Relay(ctx context.Context, local TCP) {
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var s *quic.Stream
	// A panic ends this one connection (both ends reset), never the
	// process.
	defer panics.Recover(log, "local listener connection to "+f.Target, func() error {
		local.Abort()
		if s != nil {
			Stream{s}.Abort()
		}
		return nil
	})
	octx, cancel := context.WithTimeout(ctx, HeaderTimeout)
	s, err := f.Opener.OpenStream(octx)
	cancel()
	if err != nil {
		log.Warn("cannot reach the gateway; connection refused", "target", f.Target, "err", err)
		local.Abort()
		return
	}
	remote := Stream{s}
	// The header goes out at once and the client's first bytes follow it
	// without waiting for the reply: the gateway holds them until the
	// stream is authorised, and a refusal discards them.
	if err := wire.WriteHeader(s, wire.Header{Kind: wire.KindDial, Target: f.Target}); err != nil {
		log.Warn("open stream", "target", f.Target, "err", err)
		local.Abort()
		remote.Abort()
		return
	}
	stop := context.AfterFunc(ctx, func() { remote.Abort(); local.Abort() })
	defer stop()
	res := Splice(local, &replyFirst{Stream: remote, target: f.Target, log: log})
	if res.Err != nil && ctx.Err() == nil {
		log.Debug("connection ended with an error", "target", f.Target, "err", res.Err)
	}
}

// replyFirst reads the gateway's reply before the first byte of the
// stream reaches the local client, and turns a refusal into an error (so
// Splice resets the client's connection).
type replyFirst struct {
	Stream
	target string
	log    *slog.Logger
	done   bool
}

func (r *replyFirst) Read(p []byte) (int, error) {
	if !r.done {
		r.done = true
		_ = r.Stream.SetReadDeadline(time.Now().Add(HeaderTimeout))
		rep, err := wire.ReadReply(r.Stream)
		_ = r.Stream.SetReadDeadline(time.Time{})
		if errors.Is(err, io.EOF) {
			// The stream ended before any reply: the gateway accepted
			// nothing, so the client must not see a clean end.
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, fmt.Errorf("read reply for %s: %w", r.target, err)
		}
		if err := rep.Err(); err != nil {
			r.log.Warn("connection refused", "target", r.target, "reason", err.Error())
			return 0, err
		}
	}
	return r.Stream.Read(p)
}

// AwaitReply returns s as a splice endpoint whose first Read reads the
// reply to the header already written on s (a refusal becomes an error,
// so that Splice resets the other side) before the first byte.
func AwaitReply(s *quic.Stream, target string, log *slog.Logger) Endpoint {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &replyFirst{Stream: Stream{s}, target: target, log: log}
}
