package apiserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// TestAuditLongPollEndsWhenLocked: an admin locked during a long poll
// gets the refusal, not the events committed after the lock.
func TestAuditLongPollEndsWhenLocked(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	last := s.lastSeq()
	got := make(chan response, 1)
	go func() {
		got <- s.do(admin, "GET", fmt.Sprintf("%s?after=%d&type=role.created&wait=20s", api.PathAudit, last), nil)
	}()
	time.Sleep(300 * time.Millisecond) // the poll is waiting (or not yet: then it is refused at once)
	ctx := context.Background()
	ev := audit.Event{Time: time.Now(), Type: audit.UserLocked, Actor: "system", Subject: "boss", Outcome: audit.Success}
	if err := s.store.SetUserLocked(ctx, "boss", true, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.AppendAudits(ctx, []audit.Event{
		{Time: time.Now(), Type: audit.RoleCreated, Actor: "other", Subject: "secret", Outcome: audit.Success},
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		wantError(t, r, 403, api.CodeForbidden, "locked")
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll of a locked admin did not end")
	}
}
