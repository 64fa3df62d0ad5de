package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

func (s *Server) handleListAudit(w http.ResponseWriter, r *http.Request) {
	var f store.AuditFilter
	q := r.URL.Query()
	fromEnd := false
	if v := q.Get("after"); v == api.AuditAfterEnd {
		fromEnd = true
	} else if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.fail(w, r, badRequest("after must be a non-negative event number, or end"))
			return
		}
		f.AfterSeq = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.fail(w, r, badRequest("limit must be a non-negative number"))
			return
		}
		f.Limit = n
	}
	if f.Limit == 0 || f.Limit > api.AuditPage {
		// One answer stays a bounded size however long the log grows;
		// clients page with after (tunnel admin audit ls does).
		f.Limit = api.AuditPage
	}
	sel, err := auditSelection(q)
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	if fromEnd {
		if sel == nil {
			sel = &auditSelect{}
		}
		if f.AfterSeq, err = s.lastAuditSeq(r.Context()); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if sel != nil {
		s.listAuditSelected(w, r, f, sel)
		return
	}
	evs, err := s.Store.ListAudit(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if evs == nil {
		evs = []audit.Event{}
	}
	writeJSON(w, 200, evs)
}

// auditSelect is what a filtered or waiting GET PathAudit asks for.
type auditSelect struct {
	types []string // exact types, or prefixes ending in "."
	user  string
	since time.Time
	wait  time.Duration
}

// auditSelection reads the filters and the wait of a GET PathAudit; nil
// when there is none (the plain, older answer: a bare list).
func auditSelection(q url.Values) (*auditSelect, error) {
	if !q.Has(api.AuditQueryType) && !q.Has(api.AuditQueryUser) && !q.Has(api.AuditQuerySince) && !q.Has(api.AuditQueryWait) {
		return nil, nil
	}
	sel := &auditSelect{}
	for _, t := range strings.Split(q.Get(api.AuditQueryType), ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if p, ok := strings.CutSuffix(t, "*"); ok {
			if p == "" || strings.Contains(p, "*") || !strings.HasSuffix(p, ".") {
				return nil, fmt.Errorf("type %q: a pattern is a prefix ending in .* (login.*)", t)
			}
			t = p
		}
		sel.types = append(sel.types, t)
	}
	if v := strings.TrimSpace(q.Get(api.AuditQueryUser)); v != "" {
		sel.user = identity.CanonicalName(v)
	}
	if v := q.Get(api.AuditQuerySince); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, fmt.Errorf("since %q is not an RFC 3339 time (2026-01-02T15:04:05Z)", v)
		}
		sel.since = t
	}
	if v := q.Get(api.AuditQueryWait); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("wait %q is not a duration (20s)", v)
		}
		sel.wait = min(d, api.AuditMaxWait)
	}
	return sel, nil
}

func (sel *auditSelect) match(e audit.Event) bool {
	if !sel.since.IsZero() && e.Time.Before(sel.since) {
		return false
	}
	if sel.user != "" && e.Actor != sel.user && e.Subject != sel.user {
		return false
	}
	if len(sel.types) == 0 {
		return true
	}
	for _, t := range sel.types {
		if string(e.Type) == t || strings.HasSuffix(t, ".") && strings.HasPrefix(string(e.Type), t) {
			return true
		}
	}
	return false
}

// lastAuditSeq finds the Seq of the last event with a few one-event
// reads (the log's seqs run 1..n without gaps): doubling, then bisecting.
func (s *Server) lastAuditSeq(ctx context.Context) (int64, error) {
	exists := func(seq int64) (bool, error) {
		evs, err := s.Store.ListAudit(ctx, store.AuditFilter{AfterSeq: seq - 1, Limit: 1})
		return len(evs) > 0, err
	}
	lo, hi := int64(0), int64(1) // seq lo exists (0: none), hi is a guess
	for {
		ok, err := exists(hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*2
	}
	for hi-lo > 1 { // lo exists, hi does not
		mid := lo + (hi-lo)/2
		ok, err := exists(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// auditPoll is how often a waiting request reads the log again: audit
// appends are not in the store's change feed, and one short read per
// follower per interval is cheap.
var auditPoll = 500 * time.Millisecond

// auditScanBudget bounds the events one request reads while filtering.
const auditScanBudget = 20 * api.AuditPage

// listAuditSelected answers a filtered or waiting read: the events after
// f.AfterSeq that sel selects, up to f.Limit, and where the scan stopped
// (Next). With a wait and nothing selected yet, it reads the log again
// every auditPoll until something is, the wait ends or the client goes.
func (s *Server) listAuditSelected(w http.ResponseWriter, r *http.Request, f store.AuditFilter, sel *auditSelect) {
	ctx := r.Context()
	out := api.AuditEvents{Events: []audit.Event{}, Next: f.AfterSeq}
	deadline := time.Now().Add(sel.wait)
	scanned := 0
	for {
		page, err := s.Store.ListAudit(ctx, store.AuditFilter{AfterSeq: out.Next, Limit: api.AuditPage})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, e := range page {
			if len(out.Events) >= f.Limit {
				break
			}
			out.Next = e.Seq
			scanned++
			if sel.match(e) {
				out.Events = append(out.Events, e)
			}
		}
		full := len(out.Events) >= f.Limit
		caughtUp := len(page) < api.AuditPage
		switch {
		case full || scanned >= auditScanBudget:
			writeJSON(w, 200, out)
			return
		case !caughtUp:
			continue // more of the log to read
		case len(out.Events) > 0 || !time.Now().Before(deadline):
			writeJSON(w, 200, out)
			return
		}
		t := time.NewTimer(min(auditPoll, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.waits.done():
			// Shutting down: answer now, the client asks another gateway
			// (or this one again once it is back) from out.Next.
			t.Stop()
			writeJSON(w, 200, out)
			return
		case <-t.C:
		}
		// The caller may have been locked, revoked, removed or lost the
		// admin role while waiting: a long poll streams no event past that.
		if err := s.recheckAdmin(r); err != nil {
			s.fail(w, r, err)
			return
		}
	}
}

// recheckAdmin authenticates r again, as the admin wrapper did, for a
// request that outlives that check (a long poll).
func (s *Server) recheckAdmin(r *http.Request) error {
	c, err := s.authenticate(r)
	if err != nil {
		return err
	}
	if c == nil || !c.admin {
		return &httpError{403, api.CodeForbidden, "this needs an admin role, and your roles have none"}
	}
	return nil
}

func (s *Server) handleVerifyAudit(w http.ResponseWriter, r *http.Request) {
	head, evs, err := s.auditSnapshot(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := api.AuditVerify{OK: true, Events: int64(len(evs)), Head: head}
	if len(evs) == 0 {
		// The gateway runs on an initialised store, whose log starts with
		// the cluster.init event: an empty log was emptied, with its head
		// blanked (or audit.Verify would have caught it).
		out.OK, out.BrokenAt, out.Problem = false, 1, "the log is empty, but a cluster's log starts with its cluster.init event (every event was deleted)"
		writeJSON(w, 200, out)
		return
	}
	if err := audit.Verify(evs, head); err != nil {
		var be *audit.BrokenLinkError
		if !errors.As(err, &be) {
			s.fail(w, r, err)
			return
		}
		out.OK, out.BrokenAt, out.Problem = false, be.Seq, be.Reason
	}
	writeJSON(w, 200, out)
}

// auditSnapshot reads the recorded head and the whole log as of one
// moment, while other gateways may be appending: the head is read before
// and after the events, and the read is repeated until both agree (every
// append changes the head in the same transaction as its event, so equal
// heads mean no append committed in between).
func (s *Server) auditSnapshot(ctx context.Context) (string, []audit.Event, error) {
	const tries = 20
	for range tries {
		head, err := s.Store.AuditHead(ctx)
		if err != nil {
			return "", nil, err
		}
		evs, err := s.Store.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			return "", nil, err
		}
		after, err := s.Store.AuditHead(ctx)
		if err != nil {
			return "", nil, err
		}
		if after == head {
			return head, evs, nil
		}
	}
	return "", nil, &httpError{http.StatusServiceUnavailable, api.CodeConflict,
		fmt.Sprintf("the audit log grew during each of %d reads (other gateways are appending fast): try again in a moment", tries)}
}

// waitStop is closed once, by StopWaits. The zero value is ready.
type waitStop struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func (w *waitStop) chLocked() chan struct{} {
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *waitStop) done() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.chLocked()
}

// StopWaits answers the long polls in flight (GET PathAudit with wait=)
// at once, and every later one without waiting: call it when the HTTP
// server shuts down (http.Server.RegisterOnShutdown), which otherwise
// waits for them. Safe to call more than once.
func (s *Server) StopWaits() {
	s.waits.mu.Lock()
	defer s.waits.mu.Unlock()
	if !s.waits.closed {
		s.waits.closed = true
		close(s.waits.chLocked())
	}
}
