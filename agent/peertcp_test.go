package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// tcpStream opens a direct stream over TCP from a to node at addr with
// ticket; it returns the target's one-byte answer, and, if it serves the
// stream, its reply; the connection is left open for the caller (nil when
// refused).
func tcpStream(t *testing.T, a *Agent, node, addr, service, ticket string) (byte, wire.Reply, *tlsEnd, error) {
	t.Helper()
	end, err := a.dialPeerTCP(context.Background(), node, []string{addr})
	if err != nil {
		return 0, wire.Reply{}, nil, err
	}
	if err := wire.WriteHeader(end.Conn, wire.Header{Kind: wire.KindPeer, Target: service, Ticket: ticket}); err != nil {
		end.Abort()
		return 0, wire.Reply{}, nil, err
	}
	_ = end.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ack [1]byte
	if _, err := io.ReadFull(end.Conn, ack[:]); err != nil {
		end.Abort()
		return 0, wire.Reply{}, nil, err
	}
	if ack[0] != peerTCPServe {
		end.Abort()
		return ack[0], wire.Reply{}, nil, nil
	}
	rep, err := wire.ReadReply(end.Conn)
	_ = end.Conn.SetReadDeadline(time.Time{})
	if err != nil || rep.Status != wire.StatusOK {
		end.Abort()
		return ack[0], rep, nil, err
	}
	return ack[0], rep, &end, nil
}

// tcpPeerAgent is peerAgent with its TCP listener up: the port of its UDP
// socket may be taken on TCP (then the agent serves QUIC only), and
// another agent is made.
func tcpPeerAgent(t *testing.T, ca *certs.Authority, name string, services map[string]Expose) (*Agent, string) {
	t.Helper()
	for range 10 {
		a, addr := peerAgent(t, ca, name, services)
		deadline := time.Now().Add(20 * time.Second)
		for a.peers.tcp.listening.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if a.peers.tcp.listening.Load() == 1 {
			return a, addr
		}
	}
	t.Fatal("no agent got its TCP listener in 10 tries")
	return nil, ""
}

// TestDirectTCPStreams: over TCP, the target agent serves a direct stream
// only with a ticket a gateway announced for that caller, certificate and
// service, once; bytes and half-closes pass; a new stream resumes the TLS
// session; a certificate of another cluster, or another agent answering,
// gets no connection.
func TestDirectTCPStreams(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := tcpPeerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	appID := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String()
	serial := certs.X509SerialHex(app.cert.Load().Leaf)
	announce := func(ticket, caller, serial, service string) {
		db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: ticket, Caller: caller, Serial: serial, Service: service}, nil)
		db.expect.commit(ticket)
	}

	announce("t1", appID, serial, "echo")
	ack, rep, end, err := tcpStream(t, app, "db-1", dbAddr, "echo", "t1")
	if err != nil || ack != peerTCPServe || end == nil {
		t.Fatalf("announced stream: %q %+v, %v; want it served", ack, rep, err)
	}
	if _, err := end.Conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if err := end.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = end.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(end.Conn)
	if err != nil || string(got) != "ping\n" {
		t.Errorf("echo over TCP, then the half-close passed on: %q, %v; want ping and a clean end", got, err)
	}
	_ = end.Close()

	// Once only; and the second connection resumes the TLS session.
	ack, rep, end, err = tcpStream(t, app, "db-1", dbAddr, "echo", "t1")
	if err != nil || ack != peerTCPServe || end != nil || rep.Status != wire.StatusDenied {
		t.Errorf("the same ticket again: %q %+v, %v; want it refused", ack, rep, err)
	}
	resumed, err := app.dialPeerTCP(context.Background(), "db-1", []string{dbAddr})
	if err != nil {
		t.Fatal(err)
	}
	if !resumed.Conn.ConnectionState().DidResume {
		t.Errorf("a new connection to db-1 did not resume the TLS session")
	}
	resumed.Abort()

	for _, tt := range []struct{ name, caller, serial, service string }{
		{"another caller", identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "web-1"}.String(), serial, "echo"},
		{"another certificate", appID, "00ff", "echo"},
		{"another service", appID, serial, "postgres"},
	} {
		announce("t-"+tt.name, tt.caller, tt.serial, tt.service)
		if ack, rep, _, err := tcpStream(t, app, "db-1", dbAddr, "echo", "t-"+tt.name); err != nil || ack != peerTCPServe ||
			rep.Status != wire.StatusDenied || !strings.Contains(rep.Message, "authorised for another caller or service") {
			t.Errorf("%s: %q %+v, %v; want it refused", tt.name, ack, rep, err)
		}
	}
	// Cut before it arrives: refused.
	announce("t3", appID, serial, "echo")
	db.expect.cutTicket("t3", transport.StreamRevoked)
	if _, rep, _, err := tcpStream(t, app, "db-1", dbAddr, "echo", "t3"); err != nil || rep.Status != wire.StatusDenied {
		t.Errorf("a cut ticket: %+v, %v; want it refused", rep, err)
	}

	other, _ := peerAgent(t, newCA(t, "prod"), "app-1", nil)
	if _, _, _, err := tcpStream(t, other, "db-1", dbAddr, "echo", "t4"); err == nil {
		t.Errorf("an agent of another CA got a direct stream over TCP")
	}
	if _, _, _, err := tcpStream(t, app, "db-2", dbAddr, "echo", "t5"); err == nil || !strings.Contains(err.Error(), "agent db-1, not db-2") {
		t.Errorf("db-1 answering for db-2: %v; want the connection refused", err)
	}
}

// TestDirectTCPCut: the gateway's cut resets a direct stream over TCP
// being served on the target.
func TestDirectTCPCut(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := tcpPeerAgent(t, ca, "db-1", map[string]Expose{"echo": echoService(t)})
	app, _ := peerAgent(t, ca, "app-1", nil)
	db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: "t1", Caller: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String(),
		Serial: certs.X509SerialHex(app.cert.Load().Leaf), Service: "echo"}, nil)
	db.expect.commit("t1")
	_, rep, end, err := tcpStream(t, app, "db-1", dbAddr, "echo", "t1")
	if err != nil || end == nil {
		t.Fatalf("reply %+v, %v", rep, err)
	}
	defer end.Abort()
	deadline := time.Now().Add(20 * time.Second)
	for len(db.expect.liveStreams()) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the target never tracked the stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	db.expect.cutTicket("t1", transport.StreamRevoked)
	_ = end.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.Copy(io.Discard, end.Conn)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("caller's read after the cut: %v; want the connection reset", err)
	}
	for deadline := time.Now().Add(20 * time.Second); len(db.expect.liveStreams()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the target still tracks %d streams after the cut", len(db.expect.liveStreams()))
		}
	}
}

// TestDirectTCPUseQUICForCredentials: a service that logs in to its
// database for the caller is served over QUIC only: the target says so
// and leaves the ticket for the QUIC stream.
func TestDirectTCPUseQUICForCredentials(t *testing.T) {
	ca := newCA(t, "prod")
	db, dbAddr := tcpPeerAgent(t, ca, "db-1", map[string]Expose{"pg": {Name: "pg", Address: "127.0.0.1:1", Credentials: &Credentials{}}})
	app, _ := peerAgent(t, ca, "app-1", nil)
	db.expect.add(wire.Control{Type: wire.MsgExpect, Ticket: "t1", Caller: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "app-1"}.String(),
		Serial: certs.X509SerialHex(app.cert.Load().Leaf), Service: "pg"}, nil)
	ack, _, _, err := tcpStream(t, app, "db-1", dbAddr, "pg", "t1")
	if err != nil || ack != peerTCPUseQUIC {
		t.Fatalf("answer %q, %v; want %q", ack, err, peerTCPUseQUIC)
	}
	if _, ok := db.expect.pending["t1"]; !ok {
		t.Errorf("the ticket was used up by the TCP attempt")
	}
}

// TestNotifyConnTruncation: a TCP connection that ends without a TLS
// close_notify (a peer that died) is an error, never a clean end.
func TestNotifyConnTruncation(t *testing.T) {
	ca := newCA(t, "prod")
	db, _ := peerAgent(t, ca, "db-1", nil)
	app, _ := peerAgent(t, ca, "app-1", nil)
	for _, notify := range []bool{true, false} {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conf, err := db.peerTLS(true, "")
		if err != nil {
			t.Fatal(err)
		}
		conf.NextProtos = []string{peerTCPALPN}
		go func() {
			c, err := ln.AcceptTCP()
			ln.Close()
			if err != nil {
				return
			}
			end := tlsEnd{Conn: tls.Server(notifyConn{c}, conf), tcp: c}
			if _, err := end.Conn.Write([]byte("hi")); err != nil {
				c.Close()
				return
			}
			if notify {
				_ = end.CloseWrite()
			}
			_ = c.CloseWrite() // a FIN
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}()
		end, err := app.dialPeerTCP(context.Background(), "db-1", []string{ln.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		_ = end.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(end.Conn)
		end.Abort()
		if string(got) != "hi" {
			t.Errorf("read %q; want hi", got)
		}
		if notify && err != nil {
			t.Errorf("with a close_notify: %v; want a clean end", err)
		}
		if !notify && !errors.Is(err, errNoCloseNotify) {
			t.Errorf("a FIN without close_notify: %v; want %v", err, errNoCloseNotify)
		}
	}
}

// TestPeerTCPBackoff: each failure in a row keeps a node off TCP twice as
// long, up to 32 minutes; a success forgets them.
func TestPeerTCPBackoff(t *testing.T) {
	p := newPeerTCP()
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, 32 * time.Minute} {
		p.fail("db-1")
		if got := time.Until(p.failed["db-1"]); got > want || got < want-10*time.Second {
			t.Errorf("after %d failures: off TCP for %s; want %s", i+1, got.Round(time.Second), want)
		}
		if p.usable("db-1", "echo") {
			t.Errorf("after %d failures: TCP usable", i+1)
		}
	}
	p.ok("db-1")
	p.fail("db-1")
	if got := time.Until(p.failed["db-1"]); got > time.Minute {
		t.Errorf("a failure after a success: off TCP for %s; want a minute", got.Round(time.Second))
	}
}
