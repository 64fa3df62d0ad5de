package apiserver_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// tamperedStore shows the audit log as someone with write access to the
// database file could leave it: the last events deleted, the recorded head
// blanked.
type tamperedStore struct {
	store.Store
	mu        sync.Mutex
	drop      int  // events deleted from the end
	blankHead bool // the recorded head set to ""
}

func (s *tamperedStore) set(drop int, blankHead bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop, s.blankHead = drop, blankHead
}

func (s *tamperedStore) ListAudit(ctx context.Context, f store.AuditFilter) ([]audit.Event, error) {
	evs, err := s.Store.ListAudit(ctx, f)
	s.mu.Lock()
	defer s.mu.Unlock()
	return evs[:max(0, len(evs)-s.drop)], err
}

func (s *tamperedStore) AuditHead(ctx context.Context) (string, error) {
	s.mu.Lock()
	blank := s.blankHead
	s.mu.Unlock()
	if blank {
		return "", nil
	}
	return s.Store.AuditHead(ctx)
}

// TestAuditVerifyTampered checks that GET PathAuditVerify reports a log
// whose tail was deleted, whether or not the recorded head was blanked to
// hide it.
func TestAuditVerifyTampered(t *testing.T) {
	ts := &tamperedStore{}
	s := newServer(t, func(a *apiserver.Server, _ *fakeClock) {
		ts.Store = a.Store
		a.Store = ts
	})
	c := s.admin()
	s.addRole("dev", []string{"ubuntu"}, false)
	s.addUser("bob", "dev")
	s.addUser("carol", "dev")
	all, err := s.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(all))

	tests := []struct {
		name      string
		drop      int
		blankHead bool
		wantOK    bool
		wantAt    int64
		problem   string
	}{
		{name: "untouched", wantOK: true},
		{name: "last event deleted", drop: 1, wantAt: n, problem: "deleted from the end"},
		{name: "last two events deleted, head blanked", drop: 2, blankHead: true, wantAt: 1, problem: "head is empty"},
		{name: "head blanked", blankHead: true, wantAt: 1, problem: "head is empty"},
		{name: "every event deleted, head blanked", drop: int(n), blankHead: true, wantAt: 1, problem: "log is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts.set(tc.drop, tc.blankHead)
			defer ts.set(0, false)
			r := s.do(c, "GET", api.PathAuditVerify, nil)
			if r.status != 200 {
				t.Fatalf("got status %d (%s); want 200", r.status, r.body)
			}
			var v api.AuditVerify
			r.decode(t, &v)
			if v.OK != tc.wantOK || v.BrokenAt != tc.wantAt || !strings.Contains(v.Problem, tc.problem) {
				t.Errorf("got %+v; want ok=%v broken at %d with a problem mentioning %q", v, tc.wantOK, tc.wantAt, tc.problem)
			}
		})
	}
}
