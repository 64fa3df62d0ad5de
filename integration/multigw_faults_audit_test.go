package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// TestMultiGatewayAuditVerifyWhileAppending: tunnel admin audit verify on
// one gateway reports an intact log while another gateway appends to it.
// With several gateways the log is always being appended to (logins,
// sessions, streams), so a verify that reads the head and the events in
// two statements, each its own snapshot, reports a broken chain ("the log
// goes on after the last recorded event") whenever an append commits
// between the two: a false alarm on a healthy log.
func TestMultiGatewayAuditVerifyWhileAppending(t *testing.T) {
	mgaNeedStore(t)
	srv := pgtest.Start(t)
	gws := startSharedGateways(t, srv.URL(""), 2, "--login-burst", "1000")
	admin1 := gws[0].adminUser()
	admin1.login()
	admin2 := gws[1].adminUser()
	admin2.login()

	// Appends through gateway 1 (each token is an audit event) while
	// gateway 2 verifies.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				_, _, _ = admin1.run("admin", "tokens", "create", "--agent", fmt.Sprintf("a%d-%d", k, n))
			}
		}()
	}
	const verifies = 150
	var broken []string
	for range verifies {
		so, se, err := admin2.run("admin", "audit", "verify")
		if err != nil {
			broken = append(broken, fmt.Sprintf("%v: %s%s", err, so, se))
		}
	}
	cancel()
	wg.Wait()
	if len(broken) > 0 {
		t.Errorf("%d of %d runs of audit verify on gateway 2, while gateway 1 appended, reported a broken chain; first: %s",
			len(broken), verifies, broken[0])
	}
	// Quiet again: the log is intact.
	time.Sleep(time.Second)
	admin2.must("admin", "audit", "verify")
}
