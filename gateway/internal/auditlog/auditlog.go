// Package auditlog writes audit events with group commit: events from
// concurrent callers are appended together in one store transaction, so a
// burst of streams pays for one disk sync, not one each.
//
// Append returns a channel that yields the write's outcome; a caller that
// records an action waits for it before letting the action proceed (if the
// event cannot be written, the action is refused), and may overlap the wait
// with other work.
//
// A [Folder] sits in front of a Writer for the refusals of anonymous
// callers: the first of a kind is written at once, its repeats as one
// event with a count per interval, so that no caller can write to the
// store at will.
package auditlog

import (
	"context"
	"errors"
	"sync"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// MaxBatch bounds the events written in one transaction.
const MaxBatch = 256

// ErrClosed is returned for events appended after Close.
var ErrClosed = errors.New("audit log closed")

type request struct {
	ev   audit.Event
	done chan error
}

// Writer batches audit events into a store. Start it with New; Close stops
// it after writing what was queued. Close is safe to call twice.
type Writer struct {
	store store.Store
	queue chan request

	mu     sync.Mutex // guards closed, and sending on queue
	closed bool

	wg sync.WaitGroup
}

// New starts a writer for st.
func New(st store.Store) *Writer {
	w := &Writer{store: st, queue: make(chan request, 4*MaxBatch)}
	w.wg.Add(1)
	go w.run()
	return w
}

// Append queues ev and returns a channel that receives nil once it is
// durably written, or the error that prevented it.
func (w *Writer) Append(ev audit.Event) <-chan error {
	done := make(chan error, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		done <- ErrClosed
		return done
	}
	w.queue <- request{ev: ev, done: done}
	return done
}

// Write appends ev and waits for the outcome.
func (w *Writer) Write(ctx context.Context, ev audit.Event) error {
	select {
	case err := <-w.Append(ev):
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Writer) run() {
	defer w.wg.Done()
	batch := make([]request, 0, MaxBatch)
	evs := make([]audit.Event, 0, MaxBatch)
	for first := range w.queue {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < MaxBatch {
			select {
			case r, ok := <-w.queue:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		evs = evs[:0]
		for _, r := range batch {
			evs = append(evs, r.ev)
		}
		_, err := w.store.AppendAudits(context.Background(), evs)
		for _, r := range batch {
			r.done <- err
		}
	}
}

// Close writes what is queued, then stops the writer.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	w.wg.Wait()
}
