package agent

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// A calling agent sends its stream's header to the target ahead of the
// gateway's decision, under the ticket it proposed (wire.NewTicket): these
// tests drive the target's side of it, over TCP and over QUIC.

// waitFor polls cond until it holds; the test's own deadline bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// announceEcho announces and commits, on db, a stream of app-1 (app) to
// echo under ticket, as its gateway does.
func announceEcho(db, app *Agent, ticket string) {
	db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String(),
		Serial: certs.X509SerialHex(app.cert.Load().Leaf), Service: "echo"}, nil)
	db.expect.commit(ticket)
}

// offerTCP dials db over TCP and sends the header of ticket, as
// preDialTCP does ahead of the gateway's decision.
func offerTCP(t *testing.T, app *Agent, dbAddr, ticket string) tlsEnd {
	t.Helper()
	end, err := app.dialPeerTCP(context.Background(), "db-1", []string{dbAddr})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := offerPeerTCP(end, "echo", ticket)
	if err != nil || ack != peerTCPServe {
		t.Fatalf("offer ahead: %q, %v; want %q", ack, err, peerTCPServe)
	}
	return end
}

// TestOfferAheadTCP: a stream offered over TCP before its announcement
// waits for it, keeping what the client sent meanwhile, and a half-close
// meanwhile; a caller that resets the connection (the gateway refused or
// relayed) ends the target's wait at once.
func TestOfferAheadTCP(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := tcpPeerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	db.expect.setWait(time.Hour) // only the caller's reset can end the wait
	app, _ := peerAgent(t, ca, "app-1", nil)
	announce := func(ticket string) { announceEcho(db, app, ticket) }

	// Bytes and the half-close before the announcement are kept.
	ticket := wire.NewTicket()
	end := offerTCP(t, app, dbAddr, ticket)
	waitFor(t, "the target waits for the announcement", func() bool { return db.expect.waiting(ticket) })
	if _, err := end.Conn.Write([]byte("early bytes\n")); err != nil {
		t.Fatal(err)
	}
	if err := end.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// Written and half-closed: still waiting, not refused.
	time.Sleep(200 * time.Millisecond)
	if !db.expect.waiting(ticket) {
		t.Fatal("the target stopped waiting at the caller's half-close")
	}
	announce(ticket)
	_ = end.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	rep, err := wire.ReadReply(end.Conn)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("reply once announced: %+v, %v; want it served", rep, err)
	}
	got, err := io.ReadAll(end.Conn)
	if err != nil || string(got) != "early bytes\n" {
		t.Errorf("echo of the bytes sent before the announcement: %q, %v; want them whole, then a clean end", got, err)
	}
	_ = end.Close()

	// The caller resets: the wait ends, and the ticket is not taken.
	ticket = wire.NewTicket()
	end = offerTCP(t, app, dbAddr, ticket)
	waitFor(t, "the target waits for the announcement", func() bool { return db.expect.waiting(ticket) })
	end.Abort()
	waitFor(t, "the target stops waiting once the caller reset the connection", func() bool { return !db.expect.waiting(ticket) })
}

// TestOfferAheadQUIC: the same on a QUIC peer link: the target waits for
// the announcement of a stream offered ahead, and stops waiting when the
// caller resets the stream (peerOffer.drop).
func TestOfferAheadQUIC(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := peerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	db.expect.setWait(time.Hour)
	app, _ := peerAgent(t, ca, "app-1", nil)
	if app.peers.offer("db-1", "echo", wire.NewTicket()) != nil {
		t.Fatal("an offer without a live peer link: offer dials none")
	}
	announce := func(ticket string) { announceEcho(db, app, ticket) }
	// A first stream brings the link up.
	announce("first")
	if rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "first"); err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("first stream: %+v, %v", rep, err)
	}
	ticket := wire.NewTicket()
	o := app.peers.offer("db-1", "echo", ticket)
	if o == nil {
		t.Fatal("no offer on the live peer link")
	}
	waitFor(t, "the target waits for the announcement", func() bool { return db.expect.waiting(ticket) })
	o.drop()
	waitFor(t, "the target stops waiting once the caller reset the stream", func() bool { return !db.expect.waiting(ticket) })

	// Offered, then announced: served.
	ticket = wire.NewTicket()
	o = app.peers.offer("db-1", "echo", ticket)
	if o == nil {
		t.Fatal("no offer on the live peer link")
	}
	defer o.release()
	waitFor(t, "the target waits for the announcement", func() bool { return db.expect.waiting(ticket) })
	announce(ticket)
	if _, err := o.st.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_ = o.st.Close()
	_ = o.st.SetReadDeadline(time.Now().Add(20 * time.Second))
	rep, err := wire.ReadReply(o.st)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("reply once announced: %+v, %v; want it served", rep, err)
	}
	got, err := io.ReadAll(o.st)
	if err != nil || string(got) != "ping\n" {
		t.Errorf("echo: %q, %v", got, err)
	}
	o.st.CancelRead(transport.StreamCanceled)
}

// TestDirectTicketReuse: a ticket announced again while its stream is
// served (a caller reusing the ticket it proposed) starts no second
// stream, and the gateway's cut of the ticket still reaches the first.
func TestDirectTicketReuse(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := tcpPeerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	announce := func(ticket string) { announceEcho(db, app, ticket) }
	ticket := wire.NewTicket()
	announce(ticket)
	_, rep, first, err := tcpStream(t, app, "db-1", dbAddr, "echo", ticket)
	if err != nil || first == nil {
		t.Fatalf("first stream: %+v, %v", rep, err)
	}
	defer first.Abort()
	waitFor(t, "the target serves the first stream", func() bool { return len(db.expect.liveStreams()) == 1 })

	announce(ticket)
	for _, open := range []func() (wire.Reply, error){
		func() (wire.Reply, error) {
			_, rep, end, err := tcpStream(t, app, "db-1", dbAddr, "echo", ticket)
			if end != nil {
				end.Abort()
			}
			return rep, err
		},
		func() (wire.Reply, error) { return peerStream(t, app, "db-1", dbAddr, "echo", ticket) },
	} {
		if rep, err := open(); err != nil || rep.Status != wire.StatusDenied {
			t.Errorf("a second stream under a served ticket: %+v, %v; want it refused", rep, err)
		}
	}
	if _, err := first.Conn.Write([]byte("still\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	_ = first.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(first.Conn, buf); err != nil || string(buf) != "still\n" {
		t.Errorf("the first stream after the reuse: %q, %v; want it going on", buf, err)
	}
	db.expect.cutTicket(ticket, transport.StreamRevoked)
	if _, err := io.Copy(io.Discard, first.Conn); err == nil {
		t.Errorf("the first stream after the cut of its ticket: ended cleanly; want it reset")
	}
}

// TestInboundLinks: the target knows which callers hold a QUIC peer link
// to it (a stream announced for one of them sends no punch), until the
// link ends.
func TestInboundLinks(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := peerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	appID := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String()
	if db.peers.linked(appID) {
		t.Fatal("linked before any link")
	}
	l, err := app.peers.link(context.Background(), "db-1", []string{dbAddr})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the target counts the caller's link", func() bool { return db.peers.linked(appID) })
	if db.peers.linked(identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "web-1"}.String()) {
		t.Error("another caller counted as linked")
	}
	l.conn.CloseWithError(0, "done")
	waitFor(t, "the target forgets the caller's link once it ended", func() bool { return !db.peers.linked(appID) })
}
