package apiserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// TestAuditListIsPaged: one answer holds at most api.AuditPage events,
// whatever limit is asked, so a long log never makes an answer too large;
// after pages through the rest.
func TestAuditListIsPaged(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	evs := make([]audit.Event, api.AuditPage+10)
	for i := range evs {
		evs[i] = audit.Event{Time: time.Now(), Type: audit.LoginSuccess, Actor: "bob", Outcome: audit.Success}
	}
	if _, err := s.store.AppendAudits(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	total := s.lastSeq()
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", api.AuditPage},
		{"?limit=100000", api.AuditPage},
		{"?limit=7", 7},
		{fmt.Sprintf("?after=%d", total-3), 3},
	} {
		r := s.do(admin, "GET", api.PathAudit+tc.query, nil)
		var got []audit.Event
		r.decode(t, &got)
		if len(got) != tc.want {
			t.Errorf("GET %s%s: %d events; want %d", api.PathAudit, tc.query, len(got), tc.want)
		}
	}
}
