package discovery

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Bounds of a Watcher's interval between resolutions.
const (
	DefaultMinInterval = 5 * time.Second
	DefaultMaxInterval = 5 * time.Minute
)

// WatchConfig configures Watch. Zero fields mean their default.
type WatchConfig struct {
	// Zone is the cluster's zone (as ParseGateway returns it); required.
	Zone string
	// Resolver asks DNS; nil means the system's resolvers.
	Resolver *Resolver
	// MinInterval and MaxInterval bound the wait before the next
	// resolution: the records' TTL, clamped; after a failure, MinInterval
	// doubling up to MaxInterval.
	MinInterval, MaxInterval time.Duration
	// Initial is the last list the caller knew (saved from an earlier
	// run): used when the first resolution fails. Without it, Watch fails.
	Initial []string
	// Log receives a line per change, per new failure and per recovery;
	// nil means slog.Default.
	Log *slog.Logger
	// After returns a channel that receives once d has passed; nil means
	// time.After's behaviour (tests inject their own).
	After func(d time.Duration) <-chan time.Time
}

// Watcher keeps the gateways of a zone current. Its methods are safe for
// concurrent use.
type Watcher struct {
	cfg     WatchConfig
	log     *slog.Logger
	changes chan []string

	mu       sync.Mutex // guards current
	current  []string
	failing  string // the error logged last, "" while resolutions succeed
	interval time.Duration

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Watch resolves cfg.Zone once and starts following it until ctx ends or
// Close is called. It fails when the first resolution fails and there is
// no cfg.Initial list to fall back on.
func Watch(ctx context.Context, cfg WatchConfig) (*Watcher, error) {
	if cfg.Zone == "" {
		return nil, errors.New("discovery: no zone to watch")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = &Resolver{}
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.MaxInterval < cfg.MinInterval {
		cfg.MaxInterval = max(DefaultMaxInterval, cfg.MinInterval)
	}
	w := &Watcher{cfg: cfg, log: cfg.Log, changes: make(chan []string, 1), done: make(chan struct{})}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.log = w.log.With("zone", strings.TrimSuffix(cfg.Zone, "."))
	list, ttl, err := cfg.Resolver.Resolve(ctx, cfg.Zone)
	switch {
	case err == nil:
		w.current, w.interval = list, w.clamp(ttl)
	case len(cfg.Initial) > 0:
		w.current, w.interval = slices.Clone(cfg.Initial), cfg.MinInterval
		w.failing = err.Error()
		w.log.Warn("cannot resolve the gateways in DNS; using the last known ones meanwhile",
			"err", err, "gateways", strings.Join(w.current, ","))
	default:
		return nil, err
	}
	ctx, w.cancel = context.WithCancel(ctx)
	go w.run(ctx)
	return w, nil
}

// Gateways returns the current list (HOST:PORT each).
func (w *Watcher) Gateways() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.current)
}

// Changes receives the new list after each change; a slow reader misses
// intermediate lists, never the latest.
func (w *Watcher) Changes() <-chan []string { return w.changes }

// Close stops the watcher and waits for its goroutine. Safe to call twice.
func (w *Watcher) Close() error {
	w.once.Do(w.cancel)
	<-w.done
	return nil
}

func (w *Watcher) clamp(ttl time.Duration) time.Duration {
	return min(max(ttl, w.cfg.MinInterval), w.cfg.MaxInterval)
}

func (w *Watcher) after(d time.Duration) (<-chan time.Time, func()) {
	if w.cfg.After != nil {
		return w.cfg.After(d), func() {}
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	for {
		w.mu.Lock()
		d := w.interval
		w.mu.Unlock()
		c, stop := w.after(d)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-c:
		}
		list, ttl, err := w.cfg.Resolver.Resolve(ctx, w.cfg.Zone)
		if ctx.Err() != nil {
			return
		}
		w.update(list, ttl, err)
	}
}

// update records the outcome of one resolution.
func (w *Watcher) update(list []string, ttl time.Duration, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.failing == "" {
			w.interval = w.cfg.MinInterval
		} else {
			w.interval = min(2*w.interval, w.cfg.MaxInterval)
		}
		if msg := err.Error(); msg != w.failing {
			w.failing = msg
			w.log.Warn("cannot resolve the gateways in DNS; keeping the last known ones",
				"err", err, "gateways", strings.Join(w.current, ","), "retry_in", w.interval)
		}
		return
	}
	if w.failing != "" {
		w.failing = ""
		w.log.Info("the gateways resolve in DNS again")
	}
	w.interval = w.clamp(ttl)
	if sameSet(list, w.current) {
		return
	}
	w.log.Info("the gateways in DNS changed", "was", strings.Join(w.current, ","), "now", strings.Join(list, ","))
	w.current = list
	// Latest wins: replace an unread list.
	select {
	case <-w.changes:
	default:
	}
	w.changes <- slices.Clone(list)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
