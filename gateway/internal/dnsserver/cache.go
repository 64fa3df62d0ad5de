package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// errNoRecords is returned while the source has never answered.
var errNoRecords = errors.New("the zone's records are not available yet")

// cache holds the zone's last snapshot and refreshes it from the source
// at most once per cacheFor, one refresh at a time.
type cache struct {
	src      RecordSource
	opts     zoneOptions
	clock    func() time.Time
	cacheFor time.Duration
	maxStale time.Duration
	timeout  time.Duration
	log      *slog.Logger

	mu       sync.Mutex // guards the fields below
	cur      *zoneData  // the last good snapshot, nil before the first
	built    time.Time  // when cur was fetched
	tried    time.Time  // the last fetch, good or bad
	lastErr  error      // of the last fetch
	inflight chan struct{}
	failing  bool
	skipped  string // the last skipped-records message logged
	serial   uint32
}

// get returns the snapshot to answer from, refreshing it first when it is
// older than cacheFor.
func (c *cache) get(ctx context.Context) (*zoneData, error) {
	c.mu.Lock()
	now := c.clock()
	if c.inflight == nil && now.Sub(c.tried) < c.cacheFor && !c.tried.IsZero() {
		z, err := c.usableLocked(now)
		c.mu.Unlock()
		return z, err
	}
	if ch := c.inflight; ch != nil {
		// Someone refreshes: answer from the previous snapshot if there is
		// one, or wait for theirs.
		if z, err := c.usableLocked(now); err == nil {
			c.mu.Unlock()
			return z, nil
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.usableLocked(c.clock())
	}
	ch := make(chan struct{})
	c.inflight = ch
	c.mu.Unlock()

	z, skipped, err := c.fetch(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	now = c.clock()
	c.tried, c.lastErr = now, err
	if err != nil {
		if !c.failing {
			c.failing = true
			if c.cur != nil {
				c.log.Warn("DNS: cannot read the zone's records; answering from the last ones for up to "+c.maxStale.String(), "err", err)
			} else {
				c.log.Warn("DNS: cannot read the zone's records; answering SERVFAIL until it can", "err", err)
			}
		}
	} else {
		if c.failing {
			c.failing = false
			c.log.Info("DNS: the zone's records can be read again")
		}
		if msg := strings.Join(skipped, "; "); msg != c.skipped {
			c.skipped = msg
			if msg != "" {
				c.log.Warn("DNS: some records are not published", "skipped", msg)
			}
		}
		if c.cur == nil || c.cur.digest != z.digest {
			c.serial = max(c.serial+1, uint32(now.Unix()))
		}
		c.cur, c.built = z.withSerial(c.serial), now
	}
	close(ch)
	c.inflight = nil
	return c.usableLocked(now)
}

// usableLocked returns cur if it may still be served at now.
func (c *cache) usableLocked(now time.Time) (*zoneData, error) {
	switch {
	case c.cur != nil && (c.lastErr == nil || now.Sub(c.built) < c.maxStale):
		return c.cur, nil
	case c.lastErr != nil:
		return nil, c.lastErr
	default:
		return nil, errNoRecords
	}
}

// fetch asks the source, within timeout and apart from the caller's
// cancellation (other queries wait for this refresh too).
func (c *cache) fetch(ctx context.Context) (z *zoneData, skipped []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			panics.Report(c.log, "DNS record source", r, debug.Stack())
			z, skipped, err = nil, nil, fmt.Errorf("the record source failed: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	gws, err := c.src.Gateways(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list the live gateways: %w", err)
	}
	nodes, err := c.src.Nodes(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list the published nodes: %w", err)
	}
	z, skipped = buildZone(c.opts, gws, nodes)
	return z, skipped, nil
}
