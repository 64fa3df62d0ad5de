package relay

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// hello says hello on a new control stream and reports whether the relay
// welcomed the agent.
func hello(conn *quic.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return false
	}
	_ = ctl.SetDeadline(time.Now().Add(30 * time.Second))
	if wire.WriteHeader(ctl, wire.Header{Kind: wire.KindControl}) != nil ||
		wire.WriteControl(ctl, wire.Control{Type: wire.MsgHello, Version: "test"}) != nil {
		return false
	}
	m, err := wire.ReadControl(ctl)
	return err == nil && m.Type == wire.MsgWelcome
}

// A resumed TLS session skips the certificates in the handshake, not the
// gateway's checks: the relay verifies the certificate restored from the
// ticket, its revocation and the agent's lock on every connection.
func TestResumedConnectionStillChecksLockAndRevocation(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	h.enrol("db-1")
	cert := h.cert(identity.Agent, "db-1")
	dial := func(what string) *quic.Conn {
		t.Helper()
		c := h.dial(cert)
		if !c.ConnectionState().TLS.DidResume {
			t.Fatalf("%s: the connection did not resume its TLS session", what)
		}
		return c
	}
	first := h.dial(cert)
	if !hello(first) {
		t.Fatal("first connection: no welcome")
	}
	first.CloseWithError(0, "")

	if err := h.db.SetAgentLocked(ctx, "db-1", true, h.event()); err != nil {
		t.Fatal(err)
	}
	locked := dial("locked")
	hello(locked)
	if ae := closeCause(t, locked); ae.ErrorCode != transport.CodeUnauthorized ||
		ae.ErrorMessage != "agent db-1 is locked by an administrator: tunnel admin agents unlock db-1" {
		t.Fatalf("resumed connection of a locked agent: closed with %d %q; want CodeUnauthorized and the lock", ae.ErrorCode, ae.ErrorMessage)
	}

	if err := h.db.SetAgentLocked(ctx, "db-1", false, h.event()); err != nil {
		t.Fatal(err)
	}
	unlocked := dial("unlocked")
	if !hello(unlocked) {
		t.Fatal("resumed connection after the unlock: no welcome")
	}
	unlocked.CloseWithError(0, "")

	if _, err := h.db.RevokeCertificates(ctx, store.RevokeFilter{Serial: certSerial(cert), Kind: store.CertX509}, time.Now(), h.event()); err != nil {
		t.Fatal(err)
	}
	revoked := dial("revoked")
	hello(revoked)
	if ae := closeCause(t, revoked); ae.ErrorCode != transport.CodeUnauthorized ||
		ae.ErrorMessage != "your certificate was revoked by an administrator" {
		t.Fatalf("resumed connection with a revoked certificate: closed with %d %q; want CodeUnauthorized and the revocation", ae.ErrorCode, ae.ErrorMessage)
	}
}

// A ticket issued to one identity is never used by another in the same
// process: the relay sees each client's own certificate.
func TestResumptionKeepsIdentitiesApart(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.enrol("db-1")
	h.enrol("db-2")
	c1, c2 := h.cert(identity.Agent, "db-1"), h.cert(identity.Agent, "db-2")
	for _, c := range []*tls.Certificate{c1, c2, c1, c2} {
		conn := h.dial(c)
		if !hello(conn) {
			t.Fatal("no welcome")
		}
		conn.CloseWithError(0, "")
	}
	// The relay logged each agent's own name for each of its connections;
	// the registry holds both.
	waitFor(t, "both agents seen", func() bool {
		evs := h.events(audit.AgentConnected)
		n1, n2 := 0, 0
		for _, e := range evs {
			switch e.Subject {
			case "db-1":
				n1++
			case "db-2":
				n2++
			}
		}
		return n1 == 2 && n2 == 2
	})
}
