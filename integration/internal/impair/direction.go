package impair

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// maxQueued bounds the datagrams one direction holds (delayed or queued),
// so that a sender faster than a long delay cannot exhaust memory: 64 Ki
// datagrams of 1.5 kB are about 100 MB in flight.
const maxQueued = 1 << 16

// maxBurst bounds the datagrams the scheduler sends back to back; when it
// runs late (a loaded machine can stall it for tens of milliseconds) the
// rest of what is due follows after burstGap, as from a fast link, instead
// of as one burst of hundreds of datagrams: a QUIC receiver drops what it
// cannot queue (quic-go keeps at most 256 unprocessed packets per
// connection), which would be loss the profile did not ask for.
const (
	maxBurst = 64
	burstGap = 200 * time.Microsecond
)

// Stats counts what one direction did. Received = Forwarded + Dropped +
// Failed + the datagrams still queued.
type Stats struct {
	Received  uint64 // datagrams read
	Forwarded uint64 // datagrams written on
	Bytes     uint64 // bytes of the forwarded datagrams
	Dropped   uint64 // dropped by Loss, or by a full queue
	Reordered uint64 // held back by Reorder
	Failed    uint64 // write errors (for example the target's port closed)
}

// direction applies one Profile to the datagrams going one way, and sends
// them out in the order of their due times.
type direction struct {
	out  func(f *flow, b []byte) error
	wake chan struct{}

	// mu guards everything below, and is held while a datagram is written
	// so that a datagram sent at once never overtakes one that is due.
	mu       sync.Mutex
	prof     Profile
	rng      *rand.Rand
	q        queue
	seq      uint64
	lastDue  time.Time // due time of the last datagram not held back
	linkFree time.Time // when the Rate-capped link finishes its queue

	received, forwarded, bytes, dropped, reordered, failed atomic.Uint64

	// onBurst, for tests, is told how many datagrams each round of the
	// scheduler sent back to back.
	onBurst func(sent int)
}

func newDirection(prof Profile, rng *rand.Rand, out func(*flow, []byte) error) *direction {
	return &direction{out: out, wake: make(chan struct{}, 1), prof: prof, rng: rng}
}

func (d *direction) setProfile(p Profile) {
	d.mu.Lock()
	d.prof = p
	d.mu.Unlock()
}

func (d *direction) stats() Stats {
	return Stats{Received: d.received.Load(), Forwarded: d.forwarded.Load(), Bytes: d.bytes.Load(),
		Dropped: d.dropped.Load(), Reordered: d.reordered.Load(), Failed: d.failed.Load()}
}

// admit decides the fate of datagram b from f, received now: drop it,
// send it at once, or queue it until its due time. b is owned by the
// direction from here on.
func (d *direction) admit(f *flow, b []byte, now time.Time) {
	d.received.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.prof
	if p.Loss > 0 && d.rng.Float64() < p.Loss {
		d.dropped.Add(1)
		return
	}
	if len(d.q) >= maxQueued {
		d.dropped.Add(1)
		return
	}
	leave := now // when the last bit has crossed the capped link
	if p.Rate > 0 {
		start := now
		if d.linkFree.After(now) {
			start = d.linkFree
		}
		if start.Sub(now) > p.queueDelay() {
			d.dropped.Add(1)
			return
		}
		leave = start.Add(time.Duration(float64(len(b)) / float64(p.Rate) * float64(time.Second)))
		d.linkFree = leave
	}
	due := leave.Add(p.Delay)
	if p.Jitter > 0 {
		due = due.Add(time.Duration(d.rng.Int64N(int64(p.Jitter))))
	}
	if due.Before(d.lastDue) {
		due = d.lastDue // jitter never reorders
	}
	d.lastDue = due
	if p.Reorder > 0 && d.rng.Float64() < p.Reorder {
		due = due.Add(p.reorderDelay())
		d.reordered.Add(1)
	}
	if !due.After(now) && (len(d.q) == 0 || d.q[0].due.After(now)) {
		d.send(f, b)
		return
	}
	d.seq++
	heap.Push(&d.q, item{due: due, seq: d.seq, f: f, b: b})
	if d.q[0].seq == d.seq {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// send writes one datagram; d.mu is held.
func (d *direction) send(f *flow, b []byte) {
	if err := d.out(f, b); err != nil {
		d.failed.Add(1)
		return
	}
	d.forwarded.Add(1)
	d.bytes.Add(uint64(len(b)))
}

// run sends the queued datagrams at their due times until done is closed;
// what is still queued then is dropped with the proxy.
func (d *direction) run(done <-chan struct{}) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d.mu.Lock()
		now := time.Now()
		sent := 0
		for sent < maxBurst && len(d.q) > 0 && !d.q[0].due.After(now) {
			it := heap.Pop(&d.q).(item)
			d.send(it.f, it.b)
			sent++
		}
		if d.onBurst != nil && sent > 0 {
			d.onBurst(sent)
		}
		wait := time.Hour
		switch {
		case len(d.q) == 0:
		case sent == maxBurst:
			wait = burstGap
		default:
			wait = d.q[0].due.Sub(now)
		}
		d.mu.Unlock()
		t.Reset(wait)
		select {
		case <-done:
			return
		case <-d.wake:
		case <-t.C:
		}
	}
}

// item is a datagram waiting for its due time.
type item struct {
	due time.Time
	seq uint64 // arrival order, to keep equal due times in order
	f   *flow
	b   []byte
}

// queue is a min-heap of items by due time, then arrival.
type queue []item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*q = old[:len(old)-1]
	return it
}
