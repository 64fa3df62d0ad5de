package asciicast

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Play reads a recording from r and writes its output events to w, which
// is usually a terminal, waiting between them as long as the recording did.
//
// speed divides every wait: 2 plays twice as fast, math.Inf(1) without
// waiting. It must be positive. maxIdle, if positive, caps each gap between
// consecutive events before speed applies, as asciinema's idle_time_limit
// does, so that a session left idle for an hour replays in moments.
//
// Play waits by calling sleep, which must return early with an error when
// ctx is done; nil means a timer. Play returns nil at the end of the
// recording, the cause of ctx if it is cancelled, or the first error
// reading the recording or writing to w. Output written before an error in
// the recording, such as a last line cut short, reaches w.
//
// Only output events are written. Input and markers are skipped, and so
// are resize events: the escape sequence that would resize w's terminal
// (CSI 8;H;W t) resizes the viewer's own window where terminals honour it,
// and leaves it resized after playback, so Play does not send it. Unknown
// event types are skipped too. All events count for idle time.
func Play(ctx context.Context, r io.Reader, w io.Writer, speed float64, maxIdle time.Duration, sleep func(context.Context, time.Duration) error) error {
	if !(speed > 0) {
		return fmt.Errorf("asciicast: play: speed %v, want a positive number", speed)
	}
	if sleep == nil {
		sleep = sleepContext
	}
	cr, err := NewReader(r)
	if err != nil {
		return err
	}
	// played is the recording time at which output last reached w, and
	// elapsed the recording time now, each with idle gaps capped. Waits
	// are computed from their scaled difference so that rounding does not
	// accumulate.
	var prev, elapsed, played time.Duration
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		e, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		gap := e.Time - prev
		prev = e.Time
		if maxIdle > 0 {
			gap = min(gap, maxIdle)
		}
		elapsed += gap
		if e.Type != TypeOutput {
			continue
		}
		if d := scale(elapsed, speed) - scale(played, speed); d > 0 {
			if err := sleep(ctx, d); err != nil {
				return err
			}
		}
		played = elapsed
		if _, err := io.WriteString(w, e.Data); err != nil {
			return fmt.Errorf("asciicast: play: %w", err)
		}
	}
}

// scale returns d divided by speed, rounded to the nanosecond.
func scale(d time.Duration, speed float64) time.Duration {
	f := math.Round(float64(d) / speed)
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(f)
}

// sleepContext waits for d, or until ctx is done and returns its cause.
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
