package hostile

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestTLSClientHello(t *testing.T) {
	h, err := TLSClientHello("gateway.example")
	if err != nil {
		t.Fatal(err)
	}
	if h[0] != 0x16 || h[5] != 0x01 || !bytes.Contains(h, []byte("gateway.example")) {
		t.Errorf("ClientHello starts % x and lacks the server name; want a handshake record with a ClientHello", h[:6])
	}
	j := TLSHeaderThenJunk(h)
	if len(j) != len(h) || !bytes.Equal(j[:9], h[:9]) || bytes.Equal(j[9:], h[9:]) {
		t.Error("TLSHeaderThenJunk does not keep the headers and replace the body")
	}
}

func TestSSHKexInit(t *testing.T) {
	p, err := SSHKexInit()
	if err != nil {
		t.Fatal(err)
	}
	if p[5] != 20 || !bytes.Contains(p, []byte("curve25519-sha256")) {
		t.Errorf("packet type %d; want a KEXINIT (20) naming the key exchanges", p[5])
	}
}

func TestQUICPayloads(t *testing.T) {
	in, err := CaptureInitials(2, "tunnel/1")
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 2 || bytes.Equal(in[0], in[1]) {
		t.Fatal("want two different Initials")
	}
	for _, p := range append(in, InitialJunk()) {
		if len(p) < initialSize || p[0]&0xf0 != 0xc0 || !bytes.Equal(p[1:5], []byte{0, 0, 0, 1}) {
			t.Errorf("datagram of %d bytes starting % x; want a padded QUIC v1 Initial", len(p), p[:5])
		}
	}
	if p := ShortHeaderJunk(40); p[0]&0xc0 != 0x40 {
		t.Errorf("short header starts %#x", p[0])
	}
	if c, err := ForeignClientCert("mallory"); err != nil || c.Leaf.Subject.CommonName != "mallory" {
		t.Errorf("ForeignClientCert: %v", err)
	}
}

func TestFloodHoldAndWatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			// The 1st connection of the watch test below is closed by the server.
			go func() {
				buf := make([]byte, 1)
				if n, _ := c.Read(buf); n == 1 && buf[0] == 'q' {
					c.Close()
				}
			}()
		}
	}()
	dial := TCPFrom("127.0.0.2", ln.Addr().String(), 5*time.Second)
	if r := ConnectClose(50, 8, dial); r.Connected != 50 || r.Failed != 0 {
		t.Errorf("ConnectClose = %+v; want 50 connected", r)
	}
	conns, r := Hold(20, 4, dial)
	if len(conns) != 20 || r.Connected != 20 {
		t.Errorf("Hold = %d conns, %+v; want 20", len(conns), r)
	}
	if got := conns[0].LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Errorf("source address %s; want 127.0.0.2", got)
	}
	CloseAll(conns)

	c, _ := dial()
	w := NewWatch(c)
	c.Write([]byte("q"))
	if !w.WaitClosed(time.Now().Add(5 * time.Second)) {
		t.Error("the server closed the connection; the watch did not see it")
	}
	w.Close()
	c2, _ := dial()
	w2 := NewWatch(c2)
	if w2.WaitClosed(time.Now().Add(100 * time.Millisecond)) {
		t.Error("a connection the server keeps was reported closed")
	}
	w2.Close()
	w2.Close()
	if _, _, byServer := w2.Ended(); byServer {
		t.Error("closing it ourselves counted as the server closing it")
	}
}

func TestUDPHold(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h, err := NewUDPHold("127.0.0.3", srv.LocalAddr().String(), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	buf := make([]byte, 16)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := srv.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "hello" || from.IP.String() != "127.0.0.3" {
		t.Fatalf("server got %q from %v, %v", buf[:n], from, err)
	}
	srv.WriteToUDP([]byte("not QUIC"), from)
	srv.WriteToUDP([]byte{0xc0, 0, 0, 0, 1, 1, 0xaa, 2, 0xbb, 0xcc, 0}, from) // long header, SCID bbcc
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := h.Answers(); n == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, last := h.Answers(); n != 2 || last.IsZero() {
		t.Errorf("Answers = %d, %v; want 2", n, last)
	}
	if ids := h.ServerIDs(); len(ids) != 1 || ids[0] != "bbcc" {
		t.Errorf("ServerIDs = %q; want [bbcc]", ids)
	}
	if err := h.Resend(); err != nil {
		t.Fatal(err)
	}
	if n, _, err := srv.ReadFromUDP(buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("after Resend the server got %q, %v; want hello again", buf[:n], err)
	}
	if sent, err := SendUDP("127.0.0.3", srv.LocalAddr().String(), Flood(30)); sent != 30 || err != nil {
		t.Errorf("SendUDP = %d, %v", sent, err)
	}
}

func TestProc(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	socks, err := Sockets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Socket{
		{"tcp", netip.MustParseAddrPort(ln.Addr().String())},
		{"udp", netip.MustParseAddrPort(u.LocalAddr().String())},
	} {
		if !slices.Contains(socks, want) {
			t.Errorf("Sockets = %v; want it to contain %v", socks, want)
		}
	}
	if err := Alive(os.Getpid()); err != nil {
		t.Errorf("Alive(self) = %v", err)
	}
	if n, err := FDCount(os.Getpid()); err != nil || n < 3 {
		t.Errorf("FDCount = %d, %v", n, err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("true(1): %v", err)
	}
	if err := Alive(cmd.Process.Pid); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Alive(exited) = %v; want it gone", err)
	}
}

func TestParseHexAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000000000000000000001000000:0016": "[::1]:22",
		"0000000000000000FFFF00000100007F:01BB": "127.0.0.1:443",
	} {
		got, err := parseHexAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("parseHexAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

// TestUDPHoldTellsHeldFromDropped runs a quic-go server with a short
// handshake timeout: a resent Initial is the same connection while the
// server holds the handshake, and a new one after it dropped it.
func TestUDPHoldTellsHeldFromDropped(t *testing.T) {
	cert, err := ForeignClientCert("server")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer func() { tr.Close(); udp.Close() }()
	ln, err := tr.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x"}},
		&quic.Config{HandshakeIdleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	in, err := CaptureInitials(1, "x")
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewUDPHold("127.0.0.4", udp.LocalAddr().String(), in[0])
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	waitIDs := func(n int) []string {
		deadline := time.Now().Add(3 * time.Second)
		for len(h.ServerIDs()) < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		return h.ServerIDs()
	}
	if ids := waitIDs(1); len(ids) != 1 {
		t.Fatalf("server IDs after the first Initial: %v; want one", ids)
	}
	h.Resend()
	time.Sleep(200 * time.Millisecond)
	if ids := h.ServerIDs(); len(ids) != 1 {
		t.Errorf("server IDs after a resend while the handshake is held: %v; want still one", ids)
	}
	time.Sleep(2 * time.Second) // past the handshake timeout
	h.Resend()
	if ids := waitIDs(2); len(ids) != 2 {
		t.Errorf("server IDs after a resend once the handshake was dropped: %v; want a second one", ids)
	}
}
