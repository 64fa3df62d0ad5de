package apiserver

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// MaxRecordingSize bounds an uploaded session recording.
const MaxRecordingSize = 64 << 20

func (s *Server) sessionError(w http.ResponseWriter, r *http.Request, err error) {
	var se *sessions.Error
	if errors.As(err, &se) {
		code := api.CodeForbidden
		switch se.Status {
		case 400:
			code = api.CodeBadRequest
		case 404:
			code = api.CodeNotFound
		case 409:
			code = api.CodeConflict
		case 401:
			code = api.CodeUnauthenticated
		}
		s.fail(w, r, &httpError{se.Status, code, se.Message})
		return
	}
	s.fail(w, r, err)
}

// handleCreateSession grants the caller a bastion session.
func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	if s.Sessions == nil {
		s.fail(w, r, notFound("this gateway does not broker sessions"))
		return
	}
	var req api.CreateSessionRequest
	if err := api.Decode(r.Body, &req); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	c := callerFrom(r.Context())
	g, err := s.Sessions.CreateUntil(r.Context(), c.user, req, remoteAddr(r).String(), c.notAfter)
	if err != nil {
		s.sessionError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, g)
}

func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.SessionFilter{User: q.Get("user"), Node: q.Get("node"), ActiveOnly: q.Get("active") == "1"}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.fail(w, r, badRequest("limit must be a non-negative number"))
			return
		}
		f.Limit = n
	}
	list, err := s.Store.ListSessions(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]api.Session, 0, len(list))
	for _, x := range list {
		out = append(out, sessions.ToAPI(x))
	}
	writeJSON(w, 200, out)
}

func (s *Server) handleRevokeSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sess, err := s.Sessions.Revoke(r.Context(), id, callerFrom(r.Context()).user.Name)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, notFound(fmt.Sprintf("no session %s (see tunnel admin sessions ls)", id)))
		return
	}
	if err != nil {
		s.sessionError(w, r, err)
		return
	}
	writeJSON(w, 200, sessions.ToAPI(sess))
}

// handleGetRecording returns a session's recording, unsealed (asciicast v2).
func (s *Server) handleGetRecording(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sealed, err := s.Store.GetRecording(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		// Say which is missing: the session, or its recording (a
		// session through the jump host, or one without a terminal).
		if _, gerr := s.Store.GetSession(r.Context(), id); errors.Is(gerr, store.ErrNotFound) {
			s.fail(w, r, notFound(fmt.Sprintf("no session %s (see tunnel admin sessions ls)", id)))
			return
		}
		s.fail(w, r, notFound(fmt.Sprintf("no recording of session %s", id)))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	data, err := s.Sealer.Open(sealed, "recording/"+id)
	if err != nil {
		s.fail(w, r, fmt.Errorf("open recording %s: %w", id, err))
		return
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}

// handleUploadRecording stores the recording an agent made of a session on
// its node, sealed. Only the agent that hosted the session may upload it;
// a locked agent still may (see recordingUploader).
func (s *Server) handleUploadRecording(w http.ResponseWriter, r *http.Request) {
	p, locked, err := s.recordingUploader(r)
	if err != nil {
		var pe *peer.Error
		if errors.As(err, &pe) && pe.Internal != nil {
			s.fail(w, r, err)
			return
		}
		s.fail(w, r, unauthenticated(err.Error()))
		return
	}
	id := r.PathValue("id")
	sess, err := s.Store.GetSession(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && sess.Node != p.ID.Name {
		s.fail(w, r, &httpError{403, api.CodeForbidden, "this agent did not host session " + id})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxRecordingSize+1))
	if err != nil {
		s.fail(w, r, badRequest("read recording: "+err.Error()))
		return
	}
	if len(data) > MaxRecordingSize || len(data) == 0 {
		s.fail(w, r, badRequest(fmt.Sprintf("a recording must be 1 byte to %d MiB", MaxRecordingSize>>20)))
		return
	}
	sealed, err := s.Sealer.Seal(data, "recording/"+id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Store.SaveRecording(r.Context(), id, sealed); err != nil {
		s.fail(w, r, err)
		return
	}
	ev := audit.Event{Time: s.now(), Type: audit.RecordingSaved, Actor: p.String(), Subject: id, Outcome: audit.Success,
		SourceIP: remoteAddr(r).String(), Details: map[string]string{"bytes": strconv.Itoa(len(data)), "node": sess.Node}}
	if locked {
		ev.Details["agent_locked"] = "true"
	}
	if _, err := s.Store.AppendAudit(r.Context(), ev); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// recordingUploader verifies the agent uploading a recording, and reports
// whether it is locked. A locked agent is accepted here, and only here:
// locking an agent ends its sessions, and the recordings of those sessions
// are uploaded after that; refusing them would lose exactly the recordings
// an administrator wants. Every other refusal stands (a certificate that is
// expired, revoked, foreign, of a user, or of an agent not enrolled), and
// the handler still accepts a recording only for a session on the
// uploader's own node.
func (s *Server) recordingUploader(r *http.Request) (peer.Peer, bool, error) {
	chain := peerChain(r)
	p, err := peer.Verify(r.Context(), s.Store, s.CA, chain, s.now(), identity.Agent)
	var pe *peer.Error
	if err == nil || !errors.As(err, &pe) || !pe.Locked || !pe.CertValid || pe.Internal != nil {
		return p, false, err
	}
	// The certificate itself passed every check (chain, cluster, agent
	// identity, on record, not revoked: CertValid), so the identity it
	// carries is the uploader's.
	leaf := chain[0]
	if len(leaf.URIs) != 1 {
		return peer.Peer{}, false, err
	}
	aid, perr := identity.ParseURI(leaf.URIs[0])
	if perr != nil || aid.Kind != identity.Agent || aid.Cluster != s.CA.Cluster() {
		return peer.Peer{}, false, err
	}
	return peer.Peer{ID: aid, Serial: certs.X509SerialHex(leaf), NotAfter: leaf.NotAfter}, true, nil
}

// peerChain is the client certificate chain of r (nil without TLS).
func peerChain(r *http.Request) []*x509.Certificate {
	if r.TLS == nil {
		return nil
	}
	return r.TLS.PeerCertificates
}
