package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// peerAgent is an agent with its own UDP socket and transport, accepting
// peer links, for the direct path's tests.
func peerAgent(t *testing.T, ca *certs.Authority, name string, services map[string]Expose) (*Agent, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Agent, Name: name},
		PublicKey: pub, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		cfg:      Config{File: &FileConfig{}},
		log:      slog.New(slog.DiscardHandler),
		services: services,
		id: &Identity{Name: name, Cluster: ca.Cluster(),
			CAPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.X509CA().Raw}))},
		expect: newExpected(),
		ctx:    ctx,
	}
	a.peers = newPeerPool(a)
	a.cert.Store(&tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c})
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	a.tr.Store(tr)
	tlsConf, err := a.peerTLS(true, "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tr.Listen(tlsConf, peerQUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.servePeers(ctx, ln, nil)
	}()
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		a.peers.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
		<-pdone
		tr.Close()
		udp.Close()
	})
	return a, udp.LocalAddr().String()
}

func echoService(t *testing.T) Expose {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return Expose{Name: "echo", Address: ln.Addr().String()}
}

// peerStream opens a direct stream from a to the node at addr with ticket
// and returns the target's reply, after an echo if it accepted.
func peerStream(t *testing.T, a *Agent, node, addr, service, ticket string) (wire.Reply, error) {
	t.Helper()
	st, release, err := a.peers.open(context.Background(), node, []string{addr})
	if err != nil {
		return wire.Reply{}, err
	}
	defer release()
	defer st.CancelRead(transport.StreamCanceled)
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindPeer, Target: service, Ticket: ticket}); err != nil {
		return wire.Reply{}, err
	}
	if _, err := st.Write([]byte("ping\n")); err != nil {
		return wire.Reply{}, err
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	rep, err := wire.ReadReply(st)
	if err != nil || rep.Status != wire.StatusOK {
		return rep, err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("echo over the direct stream: %q, %v", buf, err)
	}
	_ = st.Close()
	return rep, nil
}

// TestDirectStreams: a target agent serves a direct stream only when a
// gateway announced its ticket for that caller, certificate and service,
// once; a stream arriving before the announcement waits for it; a cut
// ticket is refused; a certificate of another cluster gets no link.
func TestDirectStreams(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := peerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	appID := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String()
	serial := certs.X509SerialHex(app.cert.Load().Leaf)
	announce := func(ticket, caller, serial, service string) {
		db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: caller, Serial: serial, Service: service}, nil)
		db.expect.commit(ticket)
	}

	announce("t1", appID, serial, "echo")
	if rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "t1"); err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("announced stream: %+v, %v; want it served", rep, err)
	}
	// Once only.
	if rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "t1"); err != nil || rep.Status != wire.StatusDenied {
		t.Errorf("the same ticket again: %+v, %v; want it refused", rep, err)
	}
	// Announced for someone else, another certificate, another service.
	for _, tt := range []struct{ name, caller, serial, service string }{
		{"another caller", identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "web-1"}.String(), serial, "echo"},
		{"another certificate", appID, "00ff", "echo"},
		{"another service", appID, serial, "postgres"},
	} {
		announce("t-"+tt.name, tt.caller, tt.serial, tt.service)
		if rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "t-"+tt.name); err != nil || rep.Status != wire.StatusDenied ||
			!strings.Contains(rep.Message, "authorised for another caller or service") {
			t.Errorf("%s: %+v, %v; want it refused", tt.name, rep, err)
		}
	}
	// The stream may arrive before the gateway's message.
	go func() {
		time.Sleep(300 * time.Millisecond)
		announce("t2", appID, serial, "echo")
	}()
	if rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "t2"); err != nil || rep.Status != wire.StatusOK {
		t.Errorf("stream before its announcement: %+v, %v; want it served once announced", rep, err)
	}
	// Cut before it arrives: refused.
	announce("t3", appID, serial, "echo")
	db.expect.cutTicket("t3", transport.StreamRevoked)
	if rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "t3"); err != nil || rep.Status != wire.StatusDenied {
		t.Errorf("a cut ticket: %+v, %v; want it refused", rep, err)
	}

	// An agent of another cluster gets no link at all.
	other, _ := peerAgent(t, newCA(t, "prod"), "app-1", nil)
	if _, err := peerStream(t, other, "db-1", dbAddr, "echo", "t4"); err == nil {
		t.Errorf("an agent of another CA got a direct stream")
	}
	// A link to an address where another agent answers is refused: the
	// caller checks the name the gateway gave.
	if _, err := peerStream(t, app, "db-2", dbAddr, "echo", "t5"); err == nil || !strings.Contains(err.Error(), "not reachable directly") {
		t.Errorf("db-1 answering for db-2: %v; want the link refused", err)
	}
}

// TestDirectCutResetsBothWays: the gateway's cut resets a direct stream
// being served on the target, with the gateway's code, whatever the
// caller does.
func TestDirectCutResetsBothWays(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := peerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: "t1", Caller: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String(),
		Serial: certs.X509SerialHex(app.cert.Load().Leaf), Service: "echo"}, nil)
	db.expect.commit("t1")
	st, release, err := app.peers.open(context.Background(), "db-1", []string{dbAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindPeer, Target: "echo", Ticket: "t1"}); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	if rep, err := wire.ReadReply(st); err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("reply %+v, %v", rep, err)
	}
	// Wait until the target serves it, then cut.
	deadline := time.Now().Add(20 * time.Second)
	for {
		db.expect.mu.Lock()
		n := len(db.expect.live)
		db.expect.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the target never tracked the stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	db.expect.cutTicket("t1", transport.StreamRevoked)
	_, err = io.Copy(io.Discard, st)
	var se *quic.StreamError
	if !asStreamError(err, &se) || se.ErrorCode != transport.StreamRevoked {
		t.Errorf("caller's read after the cut: %v; want a reset with the revoked code", err)
	}
}

func asStreamError(err error, se **quic.StreamError) bool {
	return err != nil && errors.As(err, se)
}

// TestDirectWaitsForTheAudit: the target passes nothing of an announced
// direct stream before the gateway says its audit event is durable
// (wire.MsgCommitted), and refuses it if the gateway cuts it instead.
func TestDirectWaitsForTheAudit(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := peerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	caller := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String()
	serial := certs.X509SerialHex(app.cert.Load().Leaf)
	for _, tt := range []struct {
		name   string
		commit bool
		want   wire.Status
	}{{"committed", true, wire.StatusOK}, {"cut", false, wire.StatusDenied}} {
		ticket := "t-" + tt.name
		db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: caller, Serial: serial, Service: "echo"}, nil)
		type result struct {
			rep wire.Reply
			err error
		}
		done := make(chan result, 1)
		go func() {
			rep, err := peerStream(t, app, "db-1", dbAddr, "echo", ticket)
			done <- result{rep, err}
		}()
		select {
		case r := <-done:
			t.Fatalf("%s: answered before the gateway's word: %+v, %v", tt.name, r.rep, r.err)
		case <-time.After(300 * time.Millisecond):
		}
		if tt.commit {
			db.expect.commit(ticket)
		} else {
			db.expect.cutTicket(ticket, transport.StreamCanceled)
		}
		r := <-done
		if tt.commit && (r.err != nil || r.rep.Status != wire.StatusOK) {
			t.Errorf("%s: %+v, %v; want it served", tt.name, r.rep, r.err)
		}
		if !tt.commit && r.err == nil && r.rep.Status == wire.StatusOK {
			t.Errorf("%s: served after the gateway cut it", tt.name)
		}
	}
}

// TestDirectTicketOnceUnderConcurrency: many streams race with one
// announced ticket; exactly one is served.
func TestDirectTicketOnceUnderConcurrency(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := peerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: "t-race", Caller: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String(),
		Serial: certs.X509SerialHex(app.cert.Load().Leaf), Service: "echo"}, nil)
	db.expect.commit("t-race")
	const n = 20
	served := make(chan bool, n)
	for range n {
		go func() {
			rep, err := peerStream(t, app, "db-1", dbAddr, "echo", "t-race")
			served <- err == nil && rep.Status == wire.StatusOK
		}()
	}
	ok := 0
	for range n {
		if <-served {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d streams with one ticket were served; want exactly 1", ok, n)
	}
}
