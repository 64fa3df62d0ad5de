package relay

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestEndCertsClosesByCertificate: EndCerts closes the connections
// authenticated with the revoked X.509 certificates, an agent's (which
// leaves the registry at once) and a user's, with a sentence each, and
// leaves alone the same user's connection with another certificate, a
// certificate of another kind with the same serial, and a newer identity
// of the agent.
func TestEndCertsClosesByCertificate(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.enrol("db-1")
	oldCert := h.cert(identity.Agent, "db-1")
	oldConn := h.dial(oldCert)
	if !hello(oldConn) {
		t.Fatal("db-1: no welcome")
	}
	waitFor(t, "db-1 registered", func() bool { return h.srv.lookup("db-1") != nil })
	h.addUser("alice")
	a1, a2 := h.cert(identity.User, "alice"), h.cert(identity.User, "alice")
	u1, u2 := h.dial(a1), h.dial(a2)
	waitFor(t, "alice's two connections", func() bool { return len(h.srv.reg.userConnsOf("alice")) == 2 })

	n := h.srv.EndCerts([]store.IssuedCert{
		{Kind: store.CertX509, Serial: certSerial(oldCert), Subject: "db-1"},
		{Kind: store.CertX509, Serial: certSerial(a1), Subject: "alice"},
		// a2's serial as an SSH certificate's: not a2.
		{Kind: store.CertSSHUser, Serial: certSerial(a2), Subject: "alice"},
	})
	if n != 2 {
		t.Errorf("EndCerts closes %d connections; want 2", n)
	}
	if h.srv.lookup("db-1") != nil {
		t.Error("db-1's revoked connection is still the one new streams go to")
	}
	if ae := closeCause(t, oldConn); ae.ErrorCode != transport.CodeRevoked || ae.ErrorMessage != reasonAgentCertRevoked {
		t.Errorf("db-1's connection closed with %d %q; want %d %q", ae.ErrorCode, ae.ErrorMessage, transport.CodeRevoked, reasonAgentCertRevoked)
	}
	if ae := closeCause(t, u1); ae.ErrorCode != transport.CodeRevoked || ae.ErrorMessage != reasonUserCertRevoked {
		t.Errorf("alice's first connection closed with %d %q; want %d %q", ae.ErrorCode, ae.ErrorMessage, transport.CodeRevoked, reasonUserCertRevoked)
	}

	// db-1 enrolled again: its new identity is untouched by the old
	// certificate's revocation, even without a subject (every connection
	// looked at, as after a foreign change).
	newConn := h.dial(h.cert(identity.Agent, "db-1"))
	if !hello(newConn) {
		t.Fatal("db-1's new identity: no welcome")
	}
	waitFor(t, "db-1's new identity registered", func() bool {
		ac := h.srv.lookup("db-1")
		return ac != nil && ac.conn.Context().Err() == nil
	})
	if n := h.srv.EndCerts([]store.IssuedCert{{Kind: store.CertX509, Serial: certSerial(oldCert)}}); n != 0 {
		t.Errorf("revoking the old certificate again closes %d connections; want 0", n)
	}
	if h.srv.lookup("db-1") == nil || newConn.Context().Err() != nil {
		t.Error("db-1's new identity was cut by the revocation of its old certificate")
	}
	if u2.Context().Err() != nil {
		t.Errorf("alice's connection with her other certificate was closed: %v", u2.Context().Err())
	}
}

// TestEndCertsCutsStreamsWithTheReason: the streams that run over a
// revoked certificate's connection, the target's or the caller's, are reset
// with StreamRevoked (the caller is told why), not merely ended with
// their connection; a stream of the same user to another node over a
// connection of another certificate goes on.
func TestEndCertsCutsStreamsWithTheReason(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.startAgent("db-1", map[string]handler{"postgres": echo})
	h.startAgent("db-2", map[string]handler{"postgres": echo})
	h.addUser("alice", "db-*/postgres")
	aliceCert := h.cert(identity.User, "alice")
	alice := h.dial(aliceCert)
	bob := h.dial(h.cert(identity.User, "alice"))
	stream := func(conn *quic.Conn, target string) *quic.Stream {
		st, rep, err := open(t, conn, target, "", nil)
		if err != nil || rep.Status != wire.StatusOK {
			t.Fatalf("open %s: %+v %v", target, rep, err)
		}
		return st
	}
	revokedWith := func(what string, st *quic.Stream) {
		t.Helper()
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := io.ReadAll(st)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != transport.StreamRevoked {
			t.Errorf("%s: %v; want a reset with StreamRevoked", what, err)
		}
	}
	toDB1, toDB2 := stream(bob, "db-1/postgres"), stream(bob, "db-2/postgres")

	// The target's certificate: db-1's stream is cut, db-2's goes on.
	h.srv.EndCerts([]store.IssuedCert{{Kind: store.CertX509, Serial: h.srv.lookup("db-1").serial, Subject: "db-1"}})
	revokedWith("the stream to db-1 after db-1's certificate was revoked", toDB1)
	if _, err := toDB2.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = toDB2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(toDB2, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the stream to db-2 after db-1's certificate was revoked: %q %v; want it to go on", buf, err)
	}

	// The caller's certificate: alice's stream is cut with the reason,
	// the same user's stream on her other certificate goes on.
	mine := stream(alice, "db-2/postgres")
	h.srv.EndCerts([]store.IssuedCert{{Kind: store.CertX509, Serial: certSerial(aliceCert), Subject: "alice"}})
	revokedWith("alice's stream after her certificate was revoked", mine)
	if _, err := toDB2.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(toDB2, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("the stream on alice's other certificate: %q %v; want it to go on", buf, err)
	}
}
