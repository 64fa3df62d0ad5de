package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBytesEvery is how often the bytes of running SSH sessions reach
// the store by default.
const DefaultBytesEvery = 10 * time.Second

// meter counts the bytes of one SSH session stream, and what of them was
// already added to the session's totals in the store.
type meter struct {
	in  atomic.Int64 // from the caller to the node
	out atomic.Int64 // from the node to the caller

	mu          sync.Mutex // serialises reports; guards the two below
	reportedIn  int64
	reportedOut int64
}

// reportSession adds to l's session totals what its stream carried since
// the last report: in and out are the totals so far. A failure is logged;
// the next report carries the difference.
func (s *Server) reportSession(l *liveStream, in, out int64) {
	m := l.meter
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dIn, dOut := max(in-m.reportedIn, 0), max(out-m.reportedOut, 0)
	if dIn == 0 && dOut == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Store.AddSessionBytes(ctx, l.session, dIn, dOut); err != nil {
		s.log().Warn("record session bytes", "session", l.session, "err", err)
		return
	}
	m.reportedIn += dIn
	m.reportedOut += dOut
}

// reportBytes adds, every BytesEvery until ctx ends, the bytes each
// running SSH session stream carried since the last report: one store
// write per stream that moved bytes, whatever their number.
func (s *Server) reportBytes(ctx context.Context) {
	every := s.BytesEvery
	if every <= 0 {
		every = DefaultBytesEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, l := range s.streamsWhere(func(l *liveStream) bool { return l.meter != nil }) {
			s.reportSession(l, l.meter.in.Load(), l.meter.out.Load())
		}
	}
}
