package relay

import (
	"testing"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
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
