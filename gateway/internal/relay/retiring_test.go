package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// certTTL issues and records a client certificate valid for ttl.
func (h *harness) certTTL(kind identity.Kind, name string, ttl time.Duration) *tls.Certificate {
	h.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	id := identity.ID{Cluster: testCluster, Kind: kind, Name: name}
	c, err := h.ca.IssueX509Client(certs.X509Request{ID: id, PublicKey: pub, TTL: ttl})
	if err != nil {
		h.t.Fatal(err)
	}
	rec := store.IssuedCert{Serial: certs.X509SerialHex(c), Kind: store.CertX509, Subject: name, SubjectKind: kind,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: time.Now(), Principals: []string{id.String()}}
	if err := h.db.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{h.event()}); err != nil {
		h.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c}
}

// connectAgent connects an enrolled agent with cert (as startAgent does,
// which enrols it and issues its certificate) and waits until the relay
// makes this connection the agent's current one.
func (h *harness) connectAgent(name string, cert *tls.Certificate, services map[string]handler) *fakeAgent {
	h.t.Helper()
	conn := h.dial(cert)
	ctl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	hello := wire.Control{Type: wire.MsgHello, Version: "test"}
	for s := range services {
		hello.Services = append(hello.Services, wire.Service{Name: s})
	}
	if err := wire.WriteHeader(ctl, wire.Header{Kind: wire.KindControl}); err != nil {
		h.t.Fatal(err)
	}
	if err := wire.WriteControl(ctl, hello); err != nil {
		h.t.Fatal(err)
	}
	if m, err := wire.ReadControl(ctl); err != nil || m.Type != wire.MsgWelcome {
		h.t.Fatalf("agent %s: no welcome: %+v %v", name, m, err)
	}
	a := &fakeAgent{conn: conn}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			st, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				hd, err := wire.ReadHeader(st)
				if err != nil || hd.Kind != wire.KindDeliver || services[hd.Target] == nil {
					st.CancelRead(transport.StreamCanceled)
					st.CancelWrite(transport.StreamCanceled)
					return
				}
				services[hd.Target](hd, st)
			}()
		}
	}()
	h.t.Cleanup(func() {
		conn.CloseWithError(0, "")
		a.wg.Wait()
	})
	waitFor(h.t, "agent "+name+"'s new connection to register", func() bool {
		ac := h.srv.lookup(name)
		if ac == nil {
			return false
		}
		chain := ac.conn.ConnectionState().TLS.PeerCertificates
		return len(chain) > 0 && certs.X509SerialHex(chain[0]) == certSerial(cert)
	})
	return a
}

// TestRetiringConnectionsFollowTheNewestCertificate: an agent connection
// replaced after a renewal keeps the streams it carries past the expiry
// of the certificate it began with, as long as the latest certificate the
// agent proved on a newer connection, for the caller's connections and
// the target's alike, with several generations retiring at once; a user's
// connection still ends at its certificate's expiry; and a lock of the
// agent cuts its retiring connections and their streams at once.
func TestRetiringConnectionsFollowTheNewestCertificate(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	h.enrol("web-1")
	h.enrol("app-1")
	if _, err := h.db.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "app-1", To: "web-1/echo", CreatedBy: "t", CreatedAt: time.Now()}, h.event()); err != nil {
		t.Fatal(err)
	}
	h.addUser("alice", "web-1/echo")

	// Two generations of short certificates, each with a stream on it.
	webCert1 := h.certTTL(identity.Agent, "web-1", 3*time.Second)
	h.connectAgent("web-1", webCert1, map[string]handler{"echo": echo})
	appCert1 := h.certTTL(identity.Agent, "app-1", 3*time.Second)
	app1 := h.connectAgent("app-1", appCert1, nil)
	st1, rep, err := open(t, app1.conn, "web-1/echo", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("first stream: %+v, %v", rep, err)
	}
	echoOnce(t, st1, "one")

	webCert2 := h.certTTL(identity.Agent, "web-1", 4*time.Second)
	h.connectAgent("web-1", webCert2, map[string]handler{"echo": echo})
	appCert2 := h.certTTL(identity.Agent, "app-1", 4*time.Second)
	app2 := h.connectAgent("app-1", appCert2, nil)
	st2, rep, err := open(t, app2.conn, "web-1/echo", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("second stream: %+v, %v", rep, err)
	}
	echoOnce(t, st2, "two")

	// A user's connection with as short a certificate, for comparison.
	alice := h.dial(h.certTTL(identity.User, "alice", 3*time.Second))

	// The renewal: each agent connects with a certificate valid for an
	// hour.
	h.connectAgent("web-1", h.certTTL(identity.Agent, "web-1", time.Hour), map[string]handler{"echo": echo})
	app3 := h.connectAgent("app-1", h.certTTL(identity.Agent, "app-1", time.Hour), nil)

	// Past the expiry of every short certificate.
	last := appCert2.Leaf.NotAfter
	for _, c := range []*tls.Certificate{webCert1, webCert2, appCert1} {
		if c.Leaf.NotAfter.After(last) {
			last = c.Leaf.NotAfter
		}
	}
	time.Sleep(time.Until(last) + time.Second)

	// The user's connection ended at its certificate's expiry...
	if ae := closeCause(t, alice); ae.ErrorCode != transport.CodeUnauthorized {
		t.Errorf("alice's connection closed with code %#x (%s); want CodeUnauthorized at her certificate's expiry", uint64(ae.ErrorCode), ae.ErrorMessage)
	}
	// ...the agents' retiring ones carry their streams on.
	echoOnce(t, st1, "one after the first certificates expired")
	echoOnce(t, st2, "two after the second certificates expired")
	for i, c := range []*quic.Conn{app1.conn, app2.conn} {
		if err := c.Context().Err(); err != nil {
			t.Errorf("app-1's connection %d closed: %v", i+1, context.Cause(c.Context()))
		}
	}

	// A lock cuts them at once, retiring or not, streams and connections.
	if err := h.db.SetAgentLocked(ctx, "app-1", true, h.event()); err != nil {
		t.Fatal(err)
	}
	h.srv.EndAgent("app-1", "access revoked")
	for i, st := range []*quic.Stream{st1, st2} {
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := io.ReadAll(st)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != transport.StreamRevoked {
			t.Errorf("stream %d after the lock: %v; want a reset with StreamRevoked", i+1, err)
		}
	}
	for i, c := range []*quic.Conn{app1.conn, app2.conn, app3.conn} {
		if ae := closeCause(t, c); ae.ErrorCode != transport.CodeRevoked {
			t.Errorf("app-1's connection %d closed with code %#x (%s); want CodeRevoked", i+1, uint64(ae.ErrorCode), ae.ErrorMessage)
		}
	}
}

// TestRevokedCertificateNoLongerKeepsRetiringConnections: a retiring
// connection kept past its own certificate's expiry by the agent's newer
// certificate ends at once when that newer certificate is revoked
// (registry.withdrawProofs, what EndCerts calls): the extension rests on
// certificates that are valid, not merely proven once.
func TestRevokedCertificateNoLongerKeepsRetiringConnections(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	h.startAgent("web-1", map[string]handler{"echo": echo})
	h.enrol("app-1")
	if _, err := h.db.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "app-1", To: "web-1/echo", CreatedBy: "t", CreatedAt: time.Now()}, h.event()); err != nil {
		t.Fatal(err)
	}
	short := h.certTTL(identity.Agent, "app-1", 3*time.Second)
	old := h.connectAgent("app-1", short, nil)
	st, rep, err := open(t, old.conn, "web-1/echo", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("stream: %+v, %v", rep, err)
	}
	echoOnce(t, st, "one")
	renewed := h.certTTL(identity.Agent, "app-1", time.Hour)
	h.connectAgent("app-1", renewed, nil)
	time.Sleep(time.Until(short.Leaf.NotAfter) + time.Second)
	echoOnce(t, st, "kept by the renewed certificate")

	// What EndCerts does with the renewed certificate revoked: its
	// connection leaves the registry (and is closed), and it keeps no
	// other connection alive.
	cur := h.srv.lookup("app-1")
	h.srv.reg.dropConn(cur)
	if h.srv.lookup("app-1") != nil {
		t.Errorf("the connection of the revoked certificate is still app-1's current one")
	}
	h.srv.reg.withdrawProofs(map[string]struct{}{certSerial(renewed): {}})
	if ae := closeCause(t, old.conn); ae.ErrorCode != transport.CodeUnauthorized {
		t.Errorf("the retiring connection closed with code %#x (%s); want CodeUnauthorized: its own certificate expired", uint64(ae.ErrorCode), ae.ErrorMessage)
	}
}
