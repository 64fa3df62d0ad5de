package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// watcher is a watch on a store: next checks that the next change
// delivered is want (Origin ignored); ch and stop are the watch's channel
// and the end of its context, for a test of its closing.
type watcher struct {
	t    *testing.T
	ch   <-chan store.Change
	stop context.CancelFunc
}

// watch starts a watch on s that ends with the test at the latest.
func watch(t *testing.T, s store.Store) *watcher {
	t.Helper()
	ctx, stop := context.WithCancel(t.Context())
	t.Cleanup(stop)
	ch, err := s.Watch(ctx)
	must(t, "Watch", err)
	return &watcher{t: t, ch: ch, stop: stop}
}

// next fails the test unless the next change delivered, within 30 s, is
// want (its Origin is not compared).
func (w *watcher) next(want store.Change) {
	w.t.Helper()
	select {
	case c, ok := <-w.ch:
		if !ok {
			w.t.Fatalf("watch closed; want %+v", want)
		}
		c.Origin = ""
		if c != want {
			w.t.Fatalf("change = %+v, want %+v", c, want)
		}
	case <-time.After(30 * time.Second):
		w.t.Fatalf("no change within 30s; want %+v", want)
	}
}
