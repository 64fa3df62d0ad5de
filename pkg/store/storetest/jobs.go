package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// testClaimJob checks store.JobClaimer: one claim per period, whoever
// asks, also when many ask at once.
func testClaimJob(t *testing.T, s store.Store) {
	jc, ok := s.(store.JobClaimer)
	if !ok {
		t.Fatalf("%T does not implement store.JobClaimer", s)
	}
	ctx := t.Context()
	const day = 24 * time.Hour
	claim := func(owner string, at time.Time) bool {
		t.Helper()
		ok, err := jc.ClaimJob(ctx, "backup", owner, at, day)
		must(t, "ClaimJob", err)
		return ok
	}
	if !claim("gw-1", t0) {
		t.Errorf("the first claim failed")
	}
	if claim("gw-2", t0.Add(time.Hour)) || claim("gw-1", t0.Add(day-time.Second)) {
		t.Errorf("a second claim within the period succeeded")
	}
	if !claim("gw-2", t0.Add(day)) {
		t.Errorf("a claim a period later failed")
	}
	if ok, err := jc.ClaimJob(ctx, "other", "gw-1", t0.Add(day+time.Minute), day); err != nil || !ok {
		t.Errorf("a claim of another job: %v, %v", ok, err)
	}

	// Many at once: exactly one wins each period.
	var wins atomic.Int64
	var wg sync.WaitGroup
	at := t0.Add(3 * day)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := jc.ClaimJob(ctx, "backup", string(rune('a'+i)), at, day)
			if err != nil {
				t.Errorf("ClaimJob: %v", err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d concurrent claims of one period succeeded; want 1", wins.Load())
	}
}
