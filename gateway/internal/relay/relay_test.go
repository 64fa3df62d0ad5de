package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// roundTrip checks that st echoes msg.
func roundTrip(t *testing.T, st *quic.Stream, msg string) {
	t.Helper()
	if _, err := st.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(st)
	if err != nil || string(got) != msg {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}
}

// TestUserReachesOnlyTheServicesOfTheirRoles: a user whose role lists
// db-1/postgres reaches it, and is refused db-1/mysql and db-2/postgres
// with the reason, audited.
func TestUserReachesOnlyTheServicesOfTheirRoles(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.startAgent("db-1", map[string]handler{"postgres": echo, "mysql": echo})
	h.startAgent("db-2", map[string]handler{"postgres": echo})
	h.addUser("alice", "db-1/postgres")
	h.addUser("wanda", "db-*/postgres")
	alice := h.dial(h.cert(identity.User, "alice"))
	wanda := h.dial(h.cert(identity.User, "wanda"))

	tests := []struct {
		conn   *quic.Conn
		target string
		want   string // refusal message; "" for allowed
	}{
		{alice, "db-1/postgres", ""},
		{alice, "db-1/mysql", "none of your roles allows db-1/mysql: ask an admin to add it to a role with --service db-1/mysql"},
		{alice, "db-2/postgres", "none of your roles allows db-2/postgres: ask an admin to add it to a role with --service db-2/postgres"},
		{wanda, "db-2/postgres", ""},
		{wanda, "db-2/mysql", "none of your roles allows db-2/mysql: ask an admin to add it to a role with --service db-2/mysql"},
	}
	for _, tt := range tests {
		st, rep, err := open(t, tt.conn, tt.target, "", nil)
		if err != nil {
			t.Fatalf("%s: read reply: %v", tt.target, err)
		}
		if tt.want == "" {
			if rep.Status != wire.StatusOK {
				t.Errorf("%s: refused (%v %q); want allowed", tt.target, rep.Status, rep.Message)
				continue
			}
			roundTrip(t, st, "hello "+tt.target)
			continue
		}
		if rep.Status != wire.StatusDenied || rep.Message != tt.want {
			t.Errorf("%s: reply %v %q; want denied %q", tt.target, rep.Status, rep.Message, tt.want)
		}
		st.CancelRead(transport.StreamCanceled)
		st.Close()
	}
	var denied []string
	for _, ev := range h.events(audit.StreamDenied) {
		denied = append(denied, ev.Actor+" "+ev.Subject)
	}
	if want := []string{"alice db-1/mysql", "alice db-2/postgres", "wanda db-2/mysql"}; strings.Join(denied, ",") != strings.Join(want, ",") {
		t.Errorf("stream.denied events %q; want %q", denied, want)
	}
}

// holdingStore holds the commit of any audit batch with a stream.allowed
// event until released.
type holdingStore struct {
	store.Store
	held    chan struct{} // receives when a batch is held
	release chan struct{} // closed to let it through
}

func (s *holdingStore) AppendAudits(ctx context.Context, evs []audit.Event) ([]audit.Event, error) {
	for _, ev := range evs {
		if ev.Type == audit.StreamAllowed {
			s.held <- struct{}{}
			<-s.release
			break
		}
	}
	return s.Store.AppendAudits(ctx, evs)
}

// TestAuditCommittedBeforeFirstByte: while the stream.allowed event is
// not committed, the target sees no byte of the caller's and the caller
// no reply; the first byte reaches the target only once the event is in
// the store.
func TestAuditCommittedBeforeFirstByte(t *testing.T) {
	hold := &holdingStore{held: make(chan struct{}, 1), release: make(chan struct{})}
	h := newHarness(t, harnessOpts{wrap: func(s store.Store) store.Store { hold.Store = s; return hold }})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold.release) }) }
	t.Cleanup(release) // runs before the harness's: a failed test does not leave the writer held
	type firstByte struct {
		b       byte
		audited bool
	}
	got := make(chan firstByte, 1)
	h.startAgent("db-1", map[string]handler{"postgres": func(_ wire.Header, st *quic.Stream) {
		if err := wire.WriteReply(st, wire.Reply{Status: wire.StatusOK}); err != nil {
			return
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(st, b); err != nil {
			return
		}
		// At the first byte, the decision must be on record.
		got <- firstByte{b: b[0], audited: len(h.events(audit.StreamAllowed)) == 1}
		_, _ = io.Copy(io.Discard, st)
		_ = st.Close()
	}})
	h.addUser("alice", "db-1/postgres")
	alice := h.dial(h.cert(identity.User, "alice"))

	type reply struct {
		rep wire.Reply
		err error
	}
	replied := make(chan reply, 1)
	var st *quic.Stream
	var openWG sync.WaitGroup
	openWG.Add(1)
	go func() {
		defer openWG.Done()
		s, rep, err := open(t, alice, "db-1/postgres", "", []byte("x"))
		st = s
		replied <- reply{rep, err}
	}()
	select {
	case <-hold.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no stream.allowed event was written within 30s")
	}
	// The commit is held. Give a relay that did not wait every chance to
	// leak a byte or a reply.
	select {
	case fb := <-got:
		t.Fatalf("the target read %q before the stream.allowed event was committed (on record: %v)", fb.b, fb.audited)
	case r := <-replied:
		t.Fatalf("the caller got reply %+v (%v) before the stream.allowed event was committed", r.rep, r.err)
	case <-time.After(time.Second):
	}
	release()
	fb := <-got
	if fb.b != 'x' || !fb.audited {
		t.Errorf("first byte %q, event on record %v; want 'x' and true", fb.b, fb.audited)
	}
	if r := <-replied; r.err != nil || r.rep.Status != wire.StatusOK {
		t.Errorf("reply %+v, %v; want OK", r.rep, r.err)
	}
	openWG.Wait()
	st.Close()
}

// fakeSessions grants any stream of the session it knows.
type fakeSessions struct {
	sess      store.Session
	panic     bool
	mu        sync.Mutex
	closed    []string
	unreached []string // "ID: reason"
}

func (f *fakeSessions) Check(_ context.Context, user, node, id string) (store.Session, error) {
	if f.panic {
		var m map[string]int
		m["boom"]++ // a bug: assignment to a nil map
	}
	if id != f.sess.ID || user != f.sess.User || node != f.sess.Node {
		return store.Session{}, errors.New("no such session")
	}
	return f.sess, nil
}

func (f *fakeSessions) Closed(_ context.Context, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = append(f.closed, id)
}

func (f *fakeSessions) Unreached(_ context.Context, id, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unreached = append(f.unreached, id+": "+reason)
}

func (f *fakeSessions) unreachedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.unreached...)
}

func (f *fakeSessions) Forwarding(context.Context, string, string) (bool, bool, error) {
	return false, false, nil
}

func (f *fakeSessions) closedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.closed...)
}

func (h *harness) createSession(id, user, node string) store.Session {
	h.t.Helper()
	s := store.Session{ID: id, User: user, Node: node, Login: "ubuntu", CreatedAt: time.Now(), Deadline: time.Now().Add(time.Hour)}
	if err := h.db.CreateSession(context.Background(), s, nil, []audit.Event{h.event()}); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) session(id string) store.Session {
	h.t.Helper()
	s, err := h.db.GetSession(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// TestSessionBytesReportedWhileStreamRuns: a running SSH session's byte
// totals grow in the store while its stream is open, and are exact once it
// ends.
func TestSessionBytesReportedWhileStreamRuns(t *testing.T) {
	sessions := &fakeSessions{}
	h := newHarness(t, harnessOpts{configure: func(s *Server) {
		s.Sessions = sessions
		s.BytesEvery = 20 * time.Millisecond
	}})
	h.startAgent("web-1", map[string]handler{api.SSHService: echo})
	h.addUser("alice")
	sessions.sess = h.createSession("sess-1", "alice", "web-1")
	alice := h.dial(h.cert(identity.User, "alice"))

	st, rep, err := open(t, alice, "web-1/"+api.SSHService, "sess-1", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("open the SSH stream: %+v, %v", rep, err)
	}
	replyLen := len(mustReply(t))
	msg := bytes.Repeat([]byte("0123456789"), 100)
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	// The stream is open: the totals show up anyway.
	waitFor(t, "the running session's bytes in the store", func() bool {
		s := h.session("sess-1")
		return s.BytesIn == int64(len(msg)) && s.BytesOut == int64(len(msg)+replyLen)
	})
	if ids := sessions.closedIDs(); len(ids) != 0 {
		t.Fatalf("session closed %v before its stream ended", ids)
	}
	// More traffic, then the end: the totals are exact (nothing counted twice).
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if n, err := io.Copy(io.Discard, st); err != nil || n != int64(len(msg)) {
		t.Fatalf("echo of the second message: %d bytes, %v", n, err)
	}
	waitFor(t, "the session to be closed", func() bool { return len(sessions.closedIDs()) == 1 })
	s := h.session("sess-1")
	if s.BytesIn != int64(2*len(msg)) || s.BytesOut != int64(2*len(msg)+replyLen) {
		t.Errorf("final totals in %d out %d; want %d and %d", s.BytesIn, s.BytesOut, 2*len(msg), 2*len(msg)+replyLen)
	}
}

// TestSSHStreamToAnOfflineNodeEndsItsSession: a session whose stream finds
// its node offline ends at once with the reason its user saw (tunnel ssh
// gives up; the session would otherwise stay active until its deadline);
// another stream to the offline node ends no session.
func TestSSHStreamToAnOfflineNodeEndsItsSession(t *testing.T) {
	sessions := &fakeSessions{}
	h := newHarness(t, harnessOpts{configure: func(s *Server) { s.Sessions = sessions }})
	h.addUser("alice", "web-1/echo")
	sessions.sess = h.createSession("sess-off", "alice", "web-1")
	alice := h.dial(h.cert(identity.User, "alice"))

	_, rep, err := open(t, alice, "web-1/"+api.SSHService, "sess-off", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != wire.StatusUnavailable || !strings.Contains(rep.Message, "node web-1 is offline") {
		t.Fatalf("SSH stream to an offline node: %+v; want unavailable, node web-1 is offline", rep)
	}
	if got := sessions.unreachedIDs(); len(got) != 1 || !strings.HasPrefix(got[0], "sess-off: node web-1 is offline") {
		t.Errorf("sessions ended as unreached: %q; want sess-off with the reason", got)
	}
	if ids := sessions.closedIDs(); len(ids) != 0 {
		t.Errorf("sessions closed as by their client: %v", ids)
	}

	_, rep, err = open(t, alice, "web-1/echo", "", nil)
	if err != nil || rep.Status != wire.StatusUnavailable {
		t.Fatalf("stream to an offline node's service: %+v, %v; want unavailable", rep, err)
	}
	if got := sessions.unreachedIDs(); len(got) != 1 {
		t.Errorf("a stream without a session ended sessions: %q", got)
	}
}

func mustReply(t *testing.T) []byte {
	b, err := wire.AppendReply(nil, wire.Reply{Status: wire.StatusOK})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// panickyStore panics looking up one certificate: a bug reached while
// verifying a connection.
type panickyStore struct {
	store.Store
	serial atomic.Value // string
}

func (s *panickyStore) GetCertificate(ctx context.Context, kind store.CertKind, serial string) (store.IssuedCert, error) {
	if serial == s.serial.Load() {
		panic("bug while verifying " + serial)
	}
	return s.Store.GetCertificate(ctx, kind, serial)
}

// TestPanicsAreContained: a panic serving a stream cuts that stream, one
// verifying a connection closes that connection; both are logged and
// counted, and the relay goes on serving the others.
func TestPanicsAreContained(t *testing.T) {
	sessions := &fakeSessions{panic: true}
	ps := &panickyStore{}
	h := newHarness(t, harnessOpts{
		wrap:      func(s store.Store) store.Store { ps.Store = s; return ps },
		configure: func(s *Server) { s.Sessions = sessions },
	})
	h.startAgent("db-1", map[string]handler{"postgres": echo, api.SSHService: echo})
	h.addUser("alice", "db-1/postgres")
	h.addUser("bob", "db-1/postgres")
	alice := h.dial(h.cert(identity.User, "alice"))

	before := panics.Count()
	_, _, err := open(t, alice, "db-1/"+api.SSHService, "sess-1", nil)
	var se *quic.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("a stream whose handling panics: read reply = %v; want a stream reset", err)
	}
	if got := panics.Count() - before; got != 1 {
		t.Errorf("panics.Count moved by %d; want 1", got)
	}
	// The same connection carries the next stream.
	st, rep, err := open(t, alice, "db-1/postgres", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("after the panic, a stream on the same connection: %+v, %v", rep, err)
	}
	roundTrip(t, st, "still here")

	// A panic while verifying a connection closes that one only.
	bobCert := h.cert(identity.User, "bob")
	ps.serial.Store(certSerial(bobCert))
	bob := h.dial(bobCert)
	if ae := closeCause(t, bob); ae.ErrorCode != transport.CodeShutdown || !strings.Contains(ae.ErrorMessage, "internal error") {
		t.Errorf("bob's connection closed with %d %q; want CodeShutdown and an internal error", ae.ErrorCode, ae.ErrorMessage)
	}
	if got := panics.Count() - before; got != 2 {
		t.Errorf("panics.Count moved by %d; want 2", got)
	}
	st, rep, err = open(t, alice, "db-1/postgres", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("after a connection's panic, alice's stream: %+v, %v", rep, err)
	}
	roundTrip(t, st, "still here")
	for _, want := range []string{"recovered a panic", "QUIC stream of alice", "assignment to entry in nil map", "bug while verifying"} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("relay log lacks %q", want)
		}
	}
}

// TestForeignCertificateRefusalsAreFolded: a burst of connections with a
// certificate of no cluster is refused, each with the reason, and costs
// two audit events: the first, and one with the count of the repeats.
func TestForeignCertificateRefusalsAreFolded(t *testing.T) {
	var folder *auditlog.Folder
	h := newHarness(t, harnessOpts{configure: func(s *Server) {
		folder = auditlog.NewFolder(s.Audit, time.Minute, nil, nil)
		s.Denials = folder
	}})
	const n = 20
	mallory := foreignCert(t)
	for range n {
		conn := h.dial(mallory)
		if ae := closeCause(t, conn); ae.ErrorCode != transport.CodeUnauthorized || ae.ErrorMessage != "your certificate was not issued by this cluster" {
			t.Fatalf("foreign certificate: closed with %d %q; want CodeUnauthorized and the reason", ae.ErrorCode, ae.ErrorMessage)
		}
	}
	waitFor(t, "the first refusal on record", func() bool { return len(h.events(audit.AgentDenied)) == 1 })
	if err := folder.Close(); err != nil {
		t.Fatal(err)
	}
	evs := h.events(audit.AgentDenied)
	if len(evs) != 2 || evs[0].Details[auditlog.DetailCount] != "" || evs[1].Details[auditlog.DetailCount] != "19" ||
		evs[1].SourceIP != "127.0.0.1" || evs[1].Reason != "your certificate was not issued by this cluster" {
		t.Errorf("agent.denied events %+v; want the first, then one with count 19 from 127.0.0.1", evs)
	}
	if n := strings.Count(h.logs.String(), "level=INFO msg=\"QUIC connection refused\""); n != 1 {
		t.Errorf("%d refusals logged at info level; want 1 (the repeats at debug)", n)
	}
}

// TestJumpHostStreamBytesReported: a stream the jump host opens (OpenSSH)
// and splices through its Endpoint reports its session's bytes while it
// runs; Done adds only what was not reported yet.
func TestJumpHostStreamBytesReported(t *testing.T) {
	sessions := &fakeSessions{}
	h := newHarness(t, harnessOpts{configure: func(s *Server) {
		s.Sessions = sessions
		s.BytesEvery = 20 * time.Millisecond
	}})
	h.startAgent("web-1", map[string]handler{api.SSHService: echo})
	h.addUser("alice")
	sess := h.createSession("sess-j", "alice", "web-1")
	x, err := h.srv.OpenSSH(context.Background(), "alice", sess, []string{"ubuntu"}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ep := x.Endpoint()
	msg := bytes.Repeat([]byte("jump"), 250)
	if _, err := ep.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ep, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the jump host session's bytes in the store", func() bool {
		s := h.session("sess-j")
		return s.BytesIn == int64(len(msg)) && s.BytesOut == int64(len(msg))
	})
	ep.CloseWrite()
	if n, _ := io.Copy(io.Discard, ep); n != 0 {
		t.Fatalf("%d more bytes after the echo", n)
	}
	ep.Close()
	x.Done(int64(len(msg)), int64(len(msg)))
	x.Done(int64(len(msg)), int64(len(msg))) // twice: nothing added
	s := h.session("sess-j")
	if s.BytesIn != int64(len(msg)) || s.BytesOut != int64(len(msg)) {
		t.Errorf("totals after Done: in %d out %d; want %d each (nothing counted twice)", s.BytesIn, s.BytesOut, len(msg))
	}
	if ids := sessions.closedIDs(); len(ids) == 0 || ids[0] != "sess-j" {
		t.Errorf("sessions closed %v; want sess-j", ids)
	}
}
