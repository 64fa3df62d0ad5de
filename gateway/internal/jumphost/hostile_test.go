package jumphost

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// TestHostileClients sends what scanners, health checks and attackers
// send; after each the jump host still serves a real login and a channel,
// and no panic was even recovered.
func TestHostileClients(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.HandshakeTimeout = 2 * time.Second })
	before := panics.Count()
	junk := make([]byte, 4096)
	rand.Read(junk)
	for _, tc := range []struct {
		name string
		do   func(t *testing.T, c net.Conn)
	}{
		{"connect and close", func(*testing.T, net.Conn) {}},
		{"garbage", func(_ *testing.T, c net.Conn) { c.Write(junk) }},
		{"banner then junk", func(_ *testing.T, c net.Conn) {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			c.Write(junk)
			io.Copy(io.Discard, c)
		}},
		{"banner then a truncated packet", func(_ *testing.T, c net.Conn) {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n\x00\x00\x10\x00\x05\x14abc"))
		}},
		{"overlong banner", func(_ *testing.T, c net.Conn) { c.Write([]byte(strings.Repeat("A", 70000))) }},
		{"key exchange only (ssh-keyscan)", func(t *testing.T, c net.Conn) {
			_, _, _, err := gossh.NewClientConn(c, "jump", &gossh.ClientConfig{
				User: "bob", HostKeyCallback: func(string, net.Addr, gossh.PublicKey) error { return errors.New("just looking") }})
			if err == nil {
				t.Error("the handshake went on without a host key")
			}
		}},
		{"no authentication (PubkeyAuthentication=no)", func(t *testing.T, c net.Conn) {
			_, _, _, err := gossh.NewClientConn(c, "jump", &gossh.ClientConfig{
				User: "bob", HostKeyCallback: gossh.InsecureIgnoreHostKey()})
			if err == nil {
				t.Error("logged in without credentials")
			}
		}},
		{"password", func(t *testing.T, c net.Conn) {
			_, _, _, err := gossh.NewClientConn(c, "jump", &gossh.ClientConfig{
				User: "bob", Auth: []gossh.AuthMethod{gossh.Password("hunter2")}, HostKeyCallback: gossh.InsecureIgnoreHostKey()})
			if err == nil {
				t.Error("logged in with a password")
			}
		}},
		{"plain key", func(t *testing.T, c net.Conn) {
			_, _, _, err := gossh.NewClientConn(c, "jump", &gossh.ClientConfig{
				User: "bob", Auth: []gossh.AuthMethod{gossh.PublicKeys(plainSigner(t))}, HostKeyCallback: gossh.InsecureIgnoreHostKey()})
			if err == nil {
				t.Error("logged in with a plain key")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			tc.do(t, c)
			c.Close()
			checkServes(t, e)
		})
	}
	if n := panics.Count() - before; n != 0 {
		t.Errorf("%d panics were recovered; want none", n)
	}
}

// checkServes logs in for real and carries bytes through a channel.
func checkServes(t *testing.T, e *env) {
	t.Helper()
	signer, _ := e.loginCert("bob", certOpts{})
	c, banner, err := e.dial("bob", signer)
	if err != nil {
		t.Fatalf("the jump host no longer serves a real login: %v (%q)", err, banner)
	}
	defer c.Close()
	if err := echoThrough(c, "web-1:22"); err != nil {
		t.Fatalf("the jump host no longer carries a channel: %v", err)
	}
}

func plainSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	signer, err := gossh.NewSignerFromKey(priv)
	must(t, err)
	return signer
}

// TestHandshakeTimeout: a connection that does not authenticate in time
// is closed, whether silent or stalled after the banner.
func TestHandshakeTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.HandshakeTimeout = 300 * time.Millisecond })
	for _, tc := range []struct {
		name string
		do   func(c net.Conn)
	}{
		{"silent", func(net.Conn) {}},
		{"stalled after the banner", func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc.do(c)
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err = io.Copy(io.Discard, bufio.NewReader(c))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the jump host kept the connection open; want it closed after the handshake timeout")
			}
		})
	}
	checkServes(t, e)
}

// TestIdleTimeout: an authenticated connection without channels is closed
// after the idle timeout; an open channel keeps it.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.IdleTimeout = 300 * time.Millisecond })
	idle, _ := e.login("bob")
	waitClosed(t, idle, "it had no channel for the idle timeout")

	busy, _ := e.login("bob")
	ch, err := busy.Dial("tcp", "web-1:22")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // three idle timeouts with a channel open
	if _, err := ch.Write([]byte("still here\n")); err != nil {
		t.Fatalf("the connection closed with a channel open: %v", err)
	}
	_ = ch.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len("still here\n"))
	if _, err := io.ReadFull(ch, got); err != nil {
		t.Fatalf("the connection closed with a channel open: %v", err)
	}
	ch.Close()
	waitClosed(t, busy, "its last channel closed an idle timeout ago")
}

// TestPanicEndsOneConnection: a panic while serving a channel closes that
// connection only; it is counted, and the jump host serves on.
func TestPanicEndsOneConnection(t *testing.T) {
	e := newEnv(t, func(s *Server) {
		next := s.open
		s.open = func(ctx context.Context, user string, sess store.Session, logins []string, src string) (transport.Endpoint, func(int64, int64), error) {
			if sess.Node == "web-2" {
				panic("a bug reached by web-2")
			}
			return next(ctx, user, sess, logins, src)
		}
	})
	other, _ := e.login("alice")
	before := panics.Count()
	c, _ := e.login("bob")
	if err := echoThrough(c, "web-2:22"); err == nil {
		t.Error("the channel that panicked worked")
	}
	waitClosed(t, c, "a panic while serving it")
	if n := panics.Count() - before; n != 1 {
		t.Errorf("%d panics counted; want 1", n)
	}
	if err := echoThrough(other, "web-1:22"); err != nil {
		t.Errorf("another connection after the panic: %v", err)
	}
	checkServes(t, e)
}

// TestCloseWithConnections: Close ends connections in every state and
// waits for their goroutines (TestMain checks for leaks).
func TestCloseWithConnections(t *testing.T) {
	e := newEnv(t)
	silent, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c, _ := e.login("bob")
	ch, err := c.Dial("tcp", "web-1:22")
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := e.jump.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c, "the jump host closed")
	if err := e.jump.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestChannelCap: one connection carries at most MaxChannels channels at
// once (one caller must not take a node's capacity); past it a channel is
// refused with the sentence, and closing one lets the next one in.
func TestChannelCap(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.MaxChannels = 3 })
	c, _ := e.login("bob")
	var chans []io.Closer
	for i := range 3 {
		ch, err := c.Dial("tcp", "web-1:22")
		if err != nil {
			t.Fatalf("channel %d of 3: %v", i+1, err)
		}
		chans = append(chans, ch)
	}
	_, err := c.Dial("tcp", "web-1:22")
	if err == nil || !strings.Contains(err.Error(), "already carries 3 channels") {
		t.Fatalf("a fourth channel: %v; want the refusal naming the cap", err)
	}
	chans[0].Close()
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if last = echoThrough(c, "web-1:22"); last == nil {
			break
		}
	}
	if last != nil {
		t.Errorf("a channel after one closed: %v; want it served", last)
	}
	for _, ch := range chans[1:] {
		ch.Close()
	}
}
