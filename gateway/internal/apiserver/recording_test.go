package apiserver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// recordingAgentCert enrols agent name in the store and returns a client
// certificate for it, recorded as enrolment records it.
func (s *testServer) recordingAgentCert(name string) *tls.Certificate {
	s.t.Helper()
	s.storeAgent(name)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	id := identity.ID{Cluster: s.ca.Cluster(), Kind: identity.Agent, Name: name}
	c, err := s.ca.IssueX509Client(certs.X509Request{ID: id, PublicKey: pub, TTL: time.Hour})
	if err != nil {
		s.t.Fatalf("IssueX509Client: %v", err)
	}
	rec := store.IssuedCert{Serial: certs.X509SerialHex(c), Kind: store.CertX509, Subject: name, SubjectKind: identity.Agent,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: s.clock.Now(), Principals: []string{id.String()}}
	ev := audit.Event{Time: s.clock.Now(), Type: audit.CertIssued, Actor: name, Subject: rec.Serial, Outcome: audit.Success}
	if err := s.store.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{ev}); err != nil {
		s.t.Fatalf("RecordCertificates: %v", err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c}
}

// upload posts a recording as the agent does.
func (s *testServer) upload(c *http.Client, session string, body []byte) response {
	s.t.Helper()
	req, err := http.NewRequest("POST", s.ts.URL+api.PathRecordings+"/"+session, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-asciicast")
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b.Bytes()}
}

// A recording is accepted only from the agent that hosted the session,
// also once that agent is locked (locking ends its sessions, whose
// recordings come after), and is stored sealed.
func TestRecordingUpload(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	s.addRole("dev", []string{"ubuntu"}, false)
	s.addUser("bob", "dev")
	host := s.client(s.recordingAgentCert("db-1"))
	other := s.client(s.recordingAgentCert("web-1"))
	user := s.client(s.issue(s.ca, "bob", time.Hour, true))
	sess := store.Session{ID: "sess-1", User: "bob", Node: "db-1", Login: "ubuntu", CreatedAt: s.clock.Now(),
		Deadline: s.clock.Now().Add(time.Hour), CertSerial: "abc1"}
	if err := s.store.CreateSession(ctx, sess, nil, nil); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	cast := []byte("{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.5, \"o\", \"secret-output-42\"]\n")

	// Another agent, and a user, are refused, and nothing is stored.
	wantError(t, s.upload(other, sess.ID, cast), 403, api.CodeForbidden, "this agent did not host session sess-1")
	wantError(t, s.upload(user, sess.ID, cast), 401, api.CodeUnauthenticated, "a user certificate cannot be used here")
	wantError(t, s.upload(s.client(nil), sess.ID, cast), 401, api.CodeUnauthenticated)
	if _, err := s.store.GetRecording(ctx, sess.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after refused uploads, GetRecording = %v; want ErrNotFound", err)
	}

	// The hosting agent, locked by an administrator, still uploads.
	lock := audit.Event{Time: s.clock.Now(), Type: audit.AgentLocked, Actor: "system", Subject: "db-1", Outcome: audit.Success}
	if err := s.store.SetAgentLocked(ctx, "db-1", true, lock); err != nil {
		t.Fatalf("SetAgentLocked: %v", err)
	}
	seq := s.lastSeq()
	if r := s.upload(host, sess.ID, cast); r.status != http.StatusNoContent {
		t.Fatalf("upload by the locked hosting agent: %d %s; want 204", r.status, r.body)
	}
	evs := s.eventsAfter(seq)
	if len(evs) != 1 || evs[0].Type != audit.RecordingSaved || evs[0].Actor != "agent:db-1" || evs[0].Subject != sess.ID ||
		evs[0].Details["agent_locked"] != "true" {
		t.Errorf("audit after the upload: %+v; want one recording.saved by agent:db-1 marked agent_locked", evs)
	}
	// Being locked does not let an agent upload for another node.
	if err := s.store.SetAgentLocked(ctx, "web-1", true, lock); err != nil {
		t.Fatalf("SetAgentLocked: %v", err)
	}
	wantError(t, s.upload(other, sess.ID, cast), 403, api.CodeForbidden, "this agent did not host session sess-1")

	// Stored sealed: the raw value is not the asciicast, and opens to it.
	raw, err := s.store.GetRecording(ctx, sess.ID)
	if err != nil {
		t.Fatalf("GetRecording: %v", err)
	}
	if bytes.Contains(raw, []byte("secret-output-42")) || bytes.Contains(raw, []byte(`"version"`)) {
		t.Errorf("the stored recording holds the plaintext: %q", raw)
	}
	if pt, err := s.sealer.Open(raw, "recording/"+sess.ID); err != nil || !bytes.Equal(pt, cast) {
		t.Errorf("the stored recording opens to %q, %v; want the uploaded asciicast", pt, err)
	}
	s.verifyAudit()
}

// The recording of a session that does not exist says there is no such
// session; of one that has none, that it has no recording.
func TestRecordingNotFound(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	sess := store.Session{ID: "sess-2", User: "admin", Node: "db-1", Login: "ubuntu", CreatedAt: s.clock.Now(),
		Deadline: s.clock.Now().Add(time.Hour), CertSerial: "abc2"}
	if err := s.store.CreateSession(context.Background(), sess, nil, nil); err != nil {
		t.Fatal(err)
	}
	wantError(t, s.do(admin, "GET", api.PathAdminSessions+"/nosuch/recording", nil), 404, api.CodeNotFound, "no session nosuch (see tunnel admin sessions ls)")
	wantError(t, s.do(admin, "GET", api.PathAdminSessions+"/sess-2/recording", nil), 404, api.CodeNotFound, "no recording of session sess-2")
}
