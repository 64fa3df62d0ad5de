package impair

import (
	"fmt"
	"time"
)

// Defaults of the optional Profile fields.
const (
	// DefaultReorderDelay is how long a datagram chosen by Reorder is held
	// back when ReorderDelay is zero.
	DefaultReorderDelay = 10 * time.Millisecond
	// DefaultQueueDelay bounds the queue in front of a Rate cap when
	// QueueDelay is zero, like a router's buffer.
	DefaultQueueDelay = 50 * time.Millisecond
)

// Profile is what one direction of the proxy does to the datagrams it
// forwards. The zero Profile forwards everything at once.
type Profile struct {
	// Loss is the probability, in [0, 1], that a datagram is dropped. 1
	// drops everything: a blackout.
	Loss float64
	// Delay is added to every datagram. The same Delay on both directions
	// makes a round trip of 2×Delay.
	Delay time.Duration
	// Jitter adds a uniform random extra delay in [0, Jitter). It does not
	// reorder: a datagram never leaves before the one received before it
	// in the same direction (use Reorder for that).
	Jitter time.Duration
	// Reorder is the probability, in [0, 1], that a datagram is held back
	// by ReorderDelay on top of its delay, so that the datagrams after it
	// overtake it.
	Reorder float64
	// ReorderDelay is the extra delay of a held-back datagram; zero means
	// DefaultReorderDelay.
	ReorderDelay time.Duration
	// Rate caps the direction's throughput, in bytes per second; zero
	// means no cap. Datagrams queue behind the cap.
	Rate int64
	// QueueDelay bounds the queue behind Rate: a datagram that would wait
	// longer than this for the link is dropped (tail drop). Zero means
	// DefaultQueueDelay.
	QueueDelay time.Duration
}

// Validate reports a field out of range.
func (p Profile) Validate() error {
	switch {
	case !(p.Loss >= 0 && p.Loss <= 1):
		return fmt.Errorf("impair: loss %v is not a probability in [0, 1]", p.Loss)
	case !(p.Reorder >= 0 && p.Reorder <= 1):
		return fmt.Errorf("impair: reorder %v is not a probability in [0, 1]", p.Reorder)
	case p.Delay < 0, p.Jitter < 0, p.ReorderDelay < 0, p.QueueDelay < 0:
		return fmt.Errorf("impair: negative duration in %+v", p)
	case p.Rate < 0:
		return fmt.Errorf("impair: negative rate %d", p.Rate)
	}
	return nil
}

func (p Profile) reorderDelay() time.Duration {
	if p.ReorderDelay == 0 {
		return DefaultReorderDelay
	}
	return p.ReorderDelay
}

func (p Profile) queueDelay() time.Duration {
	if p.QueueDelay == 0 {
		return DefaultQueueDelay
	}
	return p.QueueDelay
}

// String is a short description for logs, e.g. "loss 1%, delay 100ms".
func (p Profile) String() string {
	s := ""
	add := func(f string, args ...any) {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf(f, args...)
	}
	if p.Loss > 0 {
		add("loss %g%%", p.Loss*100)
	}
	if p.Delay > 0 {
		add("delay %s", p.Delay)
	}
	if p.Jitter > 0 {
		add("jitter %s", p.Jitter)
	}
	if p.Reorder > 0 {
		add("reorder %g%% by %s", p.Reorder*100, p.reorderDelay())
	}
	if p.Rate > 0 {
		add("rate %d B/s", p.Rate)
	}
	if s == "" {
		return "none"
	}
	return s
}
