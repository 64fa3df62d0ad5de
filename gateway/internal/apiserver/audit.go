package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

func (s *Server) handleListAudit(w http.ResponseWriter, r *http.Request) {
	var f store.AuditFilter
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.fail(w, r, badRequest("after must be a non-negative event number"))
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
