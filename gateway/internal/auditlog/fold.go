package auditlog

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// DefaultFoldInterval is how long a Folder folds repeats of a refusal
// into one event.
const DefaultFoldInterval = time.Minute

// maxFoldKeys bounds the refusals a Folder tracks at once; past it, new
// ones fold into one event per type, whatever their source and reason.
const maxFoldKeys = 10_000

// Details a folded event carries.
const (
	// DetailCount is how many refusals the event stands for.
	DetailCount = "count"
	// DetailFirstSeen and DetailLastSeen bound them in time (RFC 3339).
	DetailFirstSeen = "first_seen"
	DetailLastSeen  = "last_seen"
)

// Appender queues an event and reports its outcome; *Writer is one.
type Appender interface {
	Append(ev audit.Event) <-chan error
}

// Folder writes refusals of anonymous callers to the audit log without
// letting them write at will: the first refusal of a kind (type, actor,
// source address, reason) is written at once; repeats within the interval
// that follows are counted, and written at its end as one event carrying
// DetailCount, DetailFirstSeen and DetailLastSeen. While repeats go on,
// that is one event per kind per interval; a kind quiet for a whole
// interval starts over. Reasons that differ only in their digits
// ("expired 3s ago", "expired 4s ago") are one kind.
//
// Flush writes the windows that ended; Start runs it in the background;
// Close writes what is left. Safe for concurrent use.
type Folder struct {
	w        Appender
	interval time.Duration
	clock    func() time.Time
	log      *slog.Logger
	maxKeys  int

	mu      sync.Mutex // guards windows and closed
	windows map[foldKey]*window
	closed  bool

	startOnce sync.Once
	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup // the background flusher
}

type foldKey struct {
	typ      audit.Type
	actor    string
	source   string
	reason   string
	overflow bool // the one key per type past maxFoldKeys
}

// window is one kind's current interval.
type window struct {
	end         time.Time
	count       int64
	tmpl        audit.Event // the first repeat
	first, last time.Time
	mixed       bool // repeats name several subjects
}

// NewFolder returns a Folder writing to w. interval zero means
// DefaultFoldInterval; clock nil means time.Now; log nil means discard.
func NewFolder(w Appender, interval time.Duration, clock func() time.Time, log *slog.Logger) *Folder {
	if interval <= 0 {
		interval = DefaultFoldInterval
	}
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Folder{w: w, interval: interval, clock: clock, log: log, maxKeys: maxFoldKeys,
		windows: map[foldKey]*window{}, stop: make(chan struct{})}
}

// written is the outcome of a repeat: nothing to wait for.
var written = func() <-chan error {
	c := make(chan error)
	close(c)
	return c
}()

// Record writes ev now if it is the first of its kind in the current
// interval (done then yields the write's outcome, and folded is false),
// or counts it into the event written at the interval's end (done yields
// nil at once, and folded is true). A zero ev.Time is set to now.
func (f *Folder) Record(ev audit.Event) (done <-chan error, folded bool) {
	now := f.clock()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	key := foldKey{typ: ev.Type, actor: ev.Actor, source: ev.SourceIP, reason: stripDigits(ev.Reason)}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return f.w.Append(ev), false
	}
	w := f.windows[key]
	if w == nil && len(f.windows) >= f.maxKeys {
		key = foldKey{typ: ev.Type, overflow: true}
		w = f.windows[key]
	}
	if w == nil {
		f.windows[key] = &window{end: now.Add(f.interval)}
		f.mu.Unlock()
		return f.w.Append(ev), false
	}
	w.count++
	if w.count == 1 {
		w.tmpl, w.first = ev, ev.Time
	} else if ev.Subject != w.tmpl.Subject {
		w.mixed = true
	}
	w.last = ev.Time
	if key.overflow {
		w.mixed = true
	}
	f.mu.Unlock()
	return written, true
}

// Write records a refusal a caller can repeat at will: through f, folded,
// when f is not nil (waiting for the outcome of a write made now, or not
// at all for a folded repeat), else with write, at once. It is the one
// way login, the admin API and access decisions record such refusals.
func (f *Folder) Write(ctx context.Context, write func(context.Context, audit.Event) error, ev audit.Event) error {
	if f == nil {
		return write(ctx, ev)
	}
	done, _ := f.Record(ev)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush writes the folded events of the windows that ended by now, and
// waits for them.
func (f *Folder) Flush() error {
	now := f.clock()
	f.mu.Lock()
	var evs []audit.Event
	for k, w := range f.windows {
		if now.Before(w.end) {
			continue
		}
		if w.count == 0 {
			delete(f.windows, k)
			continue
		}
		evs = append(evs, w.event(k, now))
		f.windows[k] = &window{end: now.Add(f.interval)}
	}
	f.mu.Unlock()
	return f.write(sorted(evs))
}

// event is the one event standing for w's repeats.
func (w *window) event(k foldKey, now time.Time) audit.Event {
	ev := w.tmpl
	ev.Time = now
	ev.Details = maps.Clone(w.tmpl.Details)
	if ev.Details == nil {
		ev.Details = map[string]string{}
	}
	ev.Details[DetailCount] = strconv.FormatInt(w.count, 10)
	ev.Details[DetailFirstSeen] = w.first.UTC().Format(time.RFC3339Nano)
	ev.Details[DetailLastSeen] = w.last.UTC().Format(time.RFC3339Nano)
	if w.mixed {
		ev.Subject = ""
	}
	if k.overflow {
		ev.Actor, ev.SourceIP, ev.Reason = "anonymous", "", "many different refusals (sources or reasons); see the gateway log"
	}
	return ev
}

func (f *Folder) write(evs []audit.Event) error {
	var errs []error
	dones := make([]<-chan error, 0, len(evs))
	for _, ev := range evs {
		dones = append(dones, f.w.Append(ev))
	}
	for i, d := range dones {
		if err := <-d; err != nil {
			errs = append(errs, err)
			f.log.Error("write folded audit event", "type", evs[i].Type, "count", evs[i].Details[DetailCount], "err", err)
		}
	}
	return errors.Join(errs...)
}

// Start flushes in the background, several times per interval, until
// Close.
func (f *Folder) Start() {
	f.startOnce.Do(func() {
		tick := min(max(f.interval/4, 10*time.Millisecond), 5*time.Second)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-f.stop:
					return
				case <-t.C:
					_ = f.Flush()
				}
			}
		}()
	})
}

// Close stops the background flusher and writes every folded count,
// whether or not its interval ended; later events are written one by one.
// Close it before the Writer. Safe to call twice.
func (f *Folder) Close() error {
	var err error
	f.closeOnce.Do(func() {
		close(f.stop)
		f.wg.Wait()
		now := f.clock()
		f.mu.Lock()
		f.closed = true
		var evs []audit.Event
		for k, w := range f.windows {
			if w.count > 0 {
				evs = append(evs, w.event(k, now))
			}
		}
		f.windows = nil
		f.mu.Unlock()
		err = f.write(sorted(evs))
	})
	return err
}

// sorted orders folded events by type, source and reason, so that the
// log reads the same whatever the map's order.
func sorted(evs []audit.Event) []audit.Event {
	slices.SortFunc(evs, func(a, b audit.Event) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.SourceIP, b.SourceIP),
			cmp.Compare(a.Actor, b.Actor), cmp.Compare(a.Reason, b.Reason))
	})
	return evs
}

// stripDigits removes the digits of s, so that reasons that differ only
// in durations or counts fold together.
func stripDigits(s string) string {
	if !strings.ContainsAny(s, "0123456789") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, s)
}
