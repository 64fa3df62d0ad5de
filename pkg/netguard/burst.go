package netguard

import (
	"net/netip"
	"sync"
	"time"
)

// SummaryInterval is how often a burst of refusals (or of like log lines)
// is summarised while it lasts.
const SummaryInterval = time.Minute

// maxTrackedSources bounds the sources a burst remembers for its summary;
// past it, further sources are counted but not named.
const maxTrackedSources = 4096

// tally is what a burst of one key saw since its last line.
type tally struct {
	count   int64
	sources map[netip.Addr]int64
	sample  string
}

// busiest returns the source seen most often, and how often.
func (t *tally) busiest() (netip.Addr, int64) {
	var top netip.Addr
	var n int64
	for a, c := range t.sources {
		if c > n || c == n && a.Less(top) {
			top, n = a, c
		}
	}
	return top, n
}

// burst turns a stream of like events into one line when a burst starts
// (the caller writes it when note reports first) and one summary per
// interval while it lasts (written by summarise, from a timer goroutine
// that Close waits for). A key that sees nothing for a whole interval
// ends its burst; its next event is first again.
type burst struct {
	interval  time.Duration
	summarise func(key string, t *tally)

	mu     sync.Mutex // guards the fields below
	active map[string]*tally
	timer  *time.Timer
	armed  bool
	closed bool

	wg sync.WaitGroup // the timer's function
}

func newBurst(interval time.Duration, summarise func(key string, t *tally)) *burst {
	if interval <= 0 {
		interval = SummaryInterval
	}
	return &burst{interval: interval, summarise: summarise, active: map[string]*tally{}}
}

// note counts one event of key from src (the zero Addr if none) and
// reports whether it starts a burst, in which case the caller logs it.
func (b *burst) note(key string, src netip.Addr, sample string) (first bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.active[key]
	if !ok {
		b.active[key] = &tally{sources: map[netip.Addr]int64{}}
		b.armLocked()
		return true
	}
	t.count++
	t.sample = sample
	if src.IsValid() {
		if _, seen := t.sources[src]; seen || len(t.sources) < maxTrackedSources {
			t.sources[src]++
		}
	}
	return false
}

func (b *burst) armLocked() {
	if b.armed || b.closed {
		return
	}
	b.armed = true
	b.wg.Add(1)
	if b.timer == nil {
		b.timer = time.AfterFunc(b.interval, b.fire)
	} else {
		b.timer.Reset(b.interval)
	}
}

// fire summarises the keys that saw events and ends the quiet ones.
func (b *burst) fire() {
	defer b.wg.Done()
	b.mu.Lock()
	b.armed = false
	due := b.takeLocked(false)
	if len(b.active) > 0 {
		b.armLocked()
	}
	b.mu.Unlock()
	for k, t := range due {
		b.summarise(k, t)
	}
}

// takeLocked returns the tallies with a count, resetting them; quiet keys
// are forgotten (all: every key is).
func (b *burst) takeLocked(all bool) map[string]*tally {
	due := map[string]*tally{}
	for k, t := range b.active {
		if t.count > 0 {
			due[k] = t
		}
		if t.count == 0 || all {
			delete(b.active, k)
		} else {
			b.active[k] = &tally{sources: map[netip.Addr]int64{}}
		}
	}
	return due
}

// Close writes the pending summaries and stops the timer; notes after it
// are still counted but never summarised. Safe to call more than once.
func (b *burst) Close() {
	b.mu.Lock()
	b.closed = true
	if b.armed && b.timer.Stop() {
		b.armed = false
		b.wg.Done()
	}
	due := b.takeLocked(true)
	b.mu.Unlock()
	for k, t := range due {
		b.summarise(k, t)
	}
	b.wg.Wait()
}
