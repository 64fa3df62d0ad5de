package agent

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
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// agentCert issues a certificate of agent name valid for ttl.
func agentCert(t *testing.T, ca *certs.Authority, name string, ttl time.Duration) *tls.Certificate {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Agent, Name: name},
		PublicKey: pub, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c}
}

// openPeerStream opens an announced direct stream from a to node on its
// QUIC peer link and checks the target serves it; the stream stays open.
func openPeerStream(t *testing.T, a *Agent, node, addr, ticket string) *quic.Stream {
	t.Helper()
	st, release, err := a.peers.open(context.Background(), node, []string{addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	t.Cleanup(func() { transport.Stream{Stream: st}.Abort() })
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindPeer, Target: "echo", Ticket: ticket}); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	if rep, err := wire.ReadReply(st); err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("direct stream to %s: %+v, %v; want it served", node, rep, err)
	}
	return st
}

// echoes checks that rw (a live stream) echoes msg.
func echoes(t *testing.T, rw io.ReadWriter, setDeadline func(time.Time) error, what, msg string) {
	t.Helper()
	_ = setDeadline(time.Now().Add(20 * time.Second))
	if _, err := rw.Write([]byte(msg)); err != nil {
		t.Fatalf("%s: write: %v", what, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(rw, buf); err != nil || string(buf) != msg {
		t.Fatalf("%s: echo %q, %v; want %q", what, buf, err, msg)
	}
	_ = setDeadline(time.Time{})
}

// TestDirectStreamsFollowTheCallersNewestCertificate: a caller agent's
// direct streams, on a QUIC peer link and over TCP, outlive the
// certificate they began with once the caller renewed: its renewal
// (retireAll) shows each target it still has a stream to the new
// certificate in a new handshake, and the target keeps the caller's
// older link and connection as long as that one. A caller that does not
// renew still has its link cut when its certificate expires.
func TestDirectStreamsFollowTheCallersNewestCertificate(t *testing.T) {
	ca := newCA(t, "prod")
	dbq, dbqAddr := peerAgent(t, ca, "db-q", map[string]Expose{"echo": echoService(t)})
	dbt, dbtAddr := tcpPeerAgent(t, ca, "db-t", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	web, _ := peerAgent(t, ca, "web-1", nil)
	appShort := agentCert(t, ca, "app-1", 3*time.Second)
	app.cert.Store(appShort)
	webShort := agentCert(t, ca, "web-1", 3*time.Second)
	web.cert.Store(webShort)
	appID := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String()
	webID := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "web-1"}.String()
	announce := func(target *Agent, ticket, caller string, cert *tls.Certificate) {
		target.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: caller,
			Serial: certs.X509SerialHex(cert.Leaf), Service: "echo"}, nil)
		target.expect.commit(ticket)
	}

	// app-1 → db-q on a QUIC peer link.
	announce(dbq, "q1", appID, appShort)
	qst := openPeerStream(t, app, "db-q", dbqAddr, "q1")
	echoes(t, qst, qst.SetDeadline, "app-1 → db-q", "quic\n")
	// app-1 → db-t over TCP, counted as carryTCP counts it.
	announce(dbt, "t1", appID, appShort)
	ack, rep, tend, err := tcpStream(t, app, "db-t", dbtAddr, "echo", "t1")
	if err != nil || ack != peerTCPServe || tend == nil {
		t.Fatalf("direct stream over TCP: %q %+v, %v; want it served", ack, rep, err)
	}
	defer tend.Abort()
	app.peers.tcp.setAddrs("db-t", []string{dbtAddr})
	defer app.peers.tcp.streaming("db-t")()
	echoes(t, tend.Conn, tend.Conn.SetDeadline, "app-1 → db-t over TCP", "tcp\n")
	// web-1 → db-q, and web-1 does not renew.
	announce(dbq, "w1", webID, webShort)
	wst := openPeerStream(t, web, "db-q", dbqAddr, "w1")
	echoes(t, wst, wst.SetDeadline, "web-1 → db-q", "web\n")
	web.peers.mu.Lock()
	l := web.peers.links["db-q"]
	web.peers.mu.Unlock()
	if l == nil {
		t.Fatal("web-1 has no link to db-q")
	}

	// app-1 renews.
	appLong := agentCert(t, ca, "app-1", time.Hour)
	app.cert.Store(appLong)
	app.peers.retireAll()
	seen := func() bool {
		return dbq.peers.proofs.until(appID).Equal(appLong.Leaf.NotAfter) && dbt.peers.proofs.until(appID).Equal(appLong.Leaf.NotAfter)
	}
	for deadline := time.Now().Add(20 * time.Second); !seen() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !seen() {
		t.Errorf("db-q and db-t do not hold app-1's new certificate's expiry after 20 s (db-q %s, db-t %s; want %s)",
			dbq.peers.proofs.until(appID), dbt.peers.proofs.until(appID), appLong.Leaf.NotAfter)
	}

	// Past the short certificates' expiry.
	last := appShort.Leaf.NotAfter
	if webShort.Leaf.NotAfter.After(last) {
		last = webShort.Leaf.NotAfter
	}
	time.Sleep(time.Until(last) + time.Second)

	echoes(t, qst, qst.SetDeadline, "app-1 → db-q after app-1's first certificate expired", "still quic\n")
	echoes(t, tend.Conn, tend.Conn.SetDeadline, "app-1 → db-t after app-1's first certificate expired", "still tcp\n")
	// The link web-1 began with ended with its certificate.
	_ = wst.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, wst); err == nil {
		t.Errorf("web-1's direct stream ended cleanly; want it cut when web-1's certificate expired")
	}
	var ae *quic.ApplicationError
	select {
	case <-l.conn.Context().Done():
	case <-time.After(30 * time.Second):
		t.Fatal("web-1's link to db-q still open 30 s after web-1's certificate expired")
	}
	if err := context.Cause(l.conn.Context()); !asAppError(err, &ae) || ae.ErrorCode != transport.CodeUnauthorized {
		t.Errorf("web-1's link to db-q ended with %v; want CodeUnauthorized at its certificate's expiry", err)
	}
	// New streams of app-1's go on the link it dialled with the new
	// certificate.
	announce(dbq, "q2", appID, appLong)
	q2 := openPeerStream(t, app, "db-q", dbqAddr, "q2")
	echoes(t, q2, q2.SetDeadline, "a new stream app-1 → db-q", "new\n")
}

func asAppError(err error, ae **quic.ApplicationError) bool {
	return err != nil && errors.As(err, ae)
}
