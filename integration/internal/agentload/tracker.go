package agentload

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxEpochs bounds the epochs of one tracker (the start, and one per
// restart a test measures).
const maxEpochs = 64

// Reporter receives what simulated agents do. Its methods are called
// from many goroutines at once.
type Reporter interface {
	// Connected: agent i became connected to the gateway at at.
	Connected(i int, at time.Time)
	// Failed: agent i stopped for good.
	Failed(i int, err error)
	// Warned: an agent logged a warning or an error (key: its message,
	// with the reason of a disconnection or refusal when there is one).
	Warned(key string)
}

// Tracker counts, for agents 0 to N-1, how many are connected in the
// current epoch: [Tracker.NewEpoch] starts a new one (say before
// restarting the gateway), and each agent is counted again, with the time
// it connected, when it connects in the new epoch. It also counts the
// agents' warnings by message and keeps the errors of those that stopped
// for good. It is a [Reporter].
type Tracker struct {
	members []member
	epoch   atomic.Int64 // current epoch, from 1
	counts  [maxEpochs]atomic.Int64

	mu    sync.Mutex
	errs  []error
	warns map[string]int
}

// member is one agent's record.
type member struct {
	epoch atomic.Int64 // the last epoch it connected in
	at    atomic.Int64 // when it first connected in that epoch (UnixNano)
	conns atomic.Int64 // its connections, in all
}

// NewTracker returns a tracker of n agents, in epoch 1.
func NewTracker(n int) *Tracker {
	t := &Tracker{members: make([]member, n), warns: map[string]int{}}
	t.epoch.Store(1)
	return t
}

// N is the number of agents.
func (t *Tracker) N() int { return len(t.members) }

// Connected implements Reporter; an index out of range is ignored.
func (t *Tracker) Connected(i int, at time.Time) {
	if i < 0 || i >= len(t.members) {
		return
	}
	m := &t.members[i]
	m.conns.Add(1)
	e := t.epoch.Load()
	if m.epoch.Swap(e) != e {
		m.at.Store(at.UnixNano())
		t.counts[e].Add(1)
	}
}

// Failed implements Reporter.
func (t *Tracker) Failed(_ int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs = append(t.errs, err)
}

// Warned implements Reporter.
func (t *Tracker) Warned(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.warns[key]++
}

// NewEpoch starts a new epoch, now: from here each agent is counted again
// when it (re)connects. Call it before what disconnects them.
func (t *Tracker) NewEpoch() {
	e := t.epoch.Load() + 1
	if e >= maxEpochs {
		panic("agentload: too many epochs")
	}
	t.epoch.Store(e)
}

// ConnectedNow returns the agents connected in the current epoch (at
// least once since it began; a later disconnection is not subtracted).
func (t *Tracker) ConnectedNow() int { return int(t.counts[t.epoch.Load()].Load()) }

// Errors returns the errors of the agents that stopped for good.
func (t *Tracker) Errors() []error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.errs)
}

// ConnectTimes returns, sorted, each agent's time from since to its first
// connection in the current epoch, for the agents that connected in it.
func (t *Tracker) ConnectTimes(since time.Time) []time.Duration {
	e := t.epoch.Load()
	var out []time.Duration
	for i := range t.members {
		m := &t.members[i]
		if m.epoch.Load() == e {
			out = append(out, time.Unix(0, m.at.Load()).Sub(since))
		}
	}
	slices.Sort(out)
	return out
}

// Missing returns the agents (indices, at most max of them) not connected
// in the current epoch, and how many there are in all.
func (t *Tracker) Missing(max int) (idx []int, n int) {
	e := t.epoch.Load()
	for i := range t.members {
		if t.members[i].epoch.Load() != e {
			if n++; len(idx) < max {
				idx = append(idx, i)
			}
		}
	}
	return idx, n
}

// ConnectionsOf returns agent i's connections in all epochs (0 if out of
// range).
func (t *Tracker) ConnectionsOf(i int) int64 {
	if i < 0 || i >= len(t.members) {
		return 0
	}
	return t.members[i].conns.Load()
}

// Connections returns the agents' connections in all epochs.
func (t *Tracker) Connections() int64 {
	var n int64
	for i := range t.members {
		n += t.members[i].conns.Load()
	}
	return n
}

// Warnings returns the agents' warnings since the last reset, counted by
// key.
func (t *Tracker) Warnings() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.warns))
	for k, v := range t.warns {
		out[k] = v
	}
	return out
}

// ResetWarnings clears the warning counts.
func (t *Tracker) ResetWarnings() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.warns)
}

// Percentile returns the p-th percentile (nearest rank) of sorted ds, 0
// if empty.
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (len(ds)*p + 99) / 100
	return ds[max(0, min(len(ds)-1, i-1))]
}
