package login_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestRefusalsThatProveNothingAreFolded: with Denials set, the refusals a
// caller can repeat at will (malformed requests, a locked-out name) cost
// one audit row per kind and interval, with the count, not one row each.
func TestRefusalsThatProveNothingAreFolded(t *testing.T) {
	e := newEnv(t)
	secret := e.addUser("alice")
	w := auditlog.New(e.store)
	t.Cleanup(func() { w.Close() })
	folder := auditlog.NewFolder(w, time.Minute, e.clock.Now, nil)
	e.svc.Denials = folder
	seq := e.lastSeq()

	const n = 40
	for range n {
		req := e.request("alice", password, e.code(secret, 0))
		req.CSR = ""
		resp, err := e.login(req)
		wantCode(t, resp, err, 400, api.CodeBadRequest)
	}
	if got := len(e.eventsAfter(seq)); got != 1 {
		t.Errorf("%d malformed requests wrote %d events at once; want 1 (the rest folded)", n, got)
	}
	if err := folder.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{AfterSeq: seq})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, ev := range evs {
		if !strings.HasPrefix(ev.Reason, "malformed request: ") || ev.Type != audit.LoginFailure {
			t.Errorf("unexpected event %+v", ev)
			continue
		}
		c := 1
		if v, err := strconv.Atoi(ev.Details[auditlog.DetailCount]); err == nil {
			c = v
		}
		total += c
	}
	if total != n {
		t.Errorf("the events stand for %d refusals; want %d", total, n)
	}
}
