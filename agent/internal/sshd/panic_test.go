package sshd

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

const panicLogged = "recovered a panic; closed that one connection, the process goes on"

// A panic in the handshake (here in LookupSession, called from gliderlabs'
// connection loop) ends that connection only: the server, and the test
// process, go on, and the next connection logs in.
func TestPanicInHandshakeEndsOneConnection(t *testing.T) {
	var calls atomic.Int32
	var e *env
	e = newEnv(t, func(c *Config) {
		lookup := c.LookupSession
		c.LookupSession = func(ctx context.Context, id string, serial uint64) (Session, error) {
			if calls.Add(1) == 1 {
				panic("bug in LookupSession")
			}
			return lookup(ctx, id, serial)
		}
	})
	e.addSession(Session{ID: "p1"})
	id := e.newIdentity("id", certOpts{session: "p1"})
	before := panics.Count()

	if r := e.ssh(id, nil, "echo first"); r.code != 255 || strings.Contains(r.stdout, "first") {
		t.Errorf("first connection: code %d, stdout %q; want 255 and nothing run", r.code, r.stdout)
	}
	r := e.ssh(id, nil, "echo second")
	if r.code != 0 || r.stdout != "second\n" {
		t.Fatalf("second connection: code %d, stdout %q, stderr %q; want 0 and %q", r.code, r.stdout, r.stderr, "second\n")
	}
	if n := panics.Count() - before; n != 1 {
		t.Errorf("panics counted: %d; want 1", n)
	}
	if logs := e.logs.String(); !strings.Contains(logs, panicLogged) || !strings.Contains(logs, "bug in LookupSession") ||
		!strings.Contains(logs, "where=\"agent SSH connection\"") {
		t.Errorf("the panic was not logged with its place and value:\n%s", logs)
	}
}

// A panic in a channel handler's goroutine (started by gliderlabs, here in
// Config.Record) ends that connection, telling the user; the next one
// works.
func TestPanicInChannelEndsOneConnection(t *testing.T) {
	var calls atomic.Int32
	e := newEnv(t, func(c *Config) {
		record := c.Record
		c.Record = func(s Session, w, h int, term string) (Recorder, error) {
			if calls.Add(1) == 1 {
				panic("bug in Record")
			}
			return record(s, w, h, term)
		}
	})
	e.addSession(Session{ID: "p2"})
	id := e.newIdentity("id", certOpts{session: "p2"})

	r := e.ssh(id, nil, "echo first")
	if r.code != 255 || strings.Contains(r.stdout, "first") || !strings.Contains(r.stderr, "internal error in the node's SSH endpoint") {
		t.Errorf("first connection: code %d, stdout %q, stderr %q; want 255, nothing run, and the internal error named", r.code, r.stdout, r.stderr)
	}
	r = e.ssh(id, nil, "echo second")
	if r.code != 0 || r.stdout != "second\n" {
		t.Fatalf("second connection: code %d, stdout %q, stderr %q; want 0 and %q", r.code, r.stdout, r.stderr, "second\n")
	}
	if logs := e.logs.String(); !strings.Contains(logs, panicLogged) || !strings.Contains(logs, "bug in Record") {
		t.Errorf("the panic was not logged:\n%s", logs)
	}
}

// A connection that never speaks is closed at the handshake deadline: it
// cannot hold a goroutine forever.
func TestSilentConnectionClosedAtHandshakeDeadline(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 256)
	for {
		// The server's banner first, then the end of the connection.
		if _, err = c.Read(buf); err != nil {
			break
		}
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a silent connection was still open after 30s; want it closed at the 500ms handshake deadline")
	}
}

// What a scanner or a health check sends (connect and close, garbage, a
// banner then junk, a half handshake) leaves the server serving: the next
// client logs in.
func TestHostileClientsThenLogin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HandshakeTimeout = 2 * time.Second })
	e.addSession(Session{ID: "h1"})
	id := e.newIdentity("id", certOpts{session: "h1"})
	for _, send := range []string{
		"",                                  // connect and close
		"\x00\xff garbage \r\n\x16\x03\x01", // garbage bytes
		"SSH-2.0-scanner\r\n\x00\x00\x00\x05junk", // a banner, then junk
		"SSH-2.0-OpenSSH_9.6\r\n",                 // a half-finished handshake, then silence
	} {
		c, err := net.Dial("tcp", e.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		if send != "" {
			_, _ = c.Write([]byte(send))
		}
		// Read until the server closes (at the latest at the handshake
		// deadline).
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 1024)
		for {
			if _, err = c.Read(buf); err != nil {
				break
			}
		}
		c.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("after %q the server kept the connection open past its handshake deadline", send)
		}
	}
	if r := e.ssh(id, nil, "echo alive"); r.code != 0 || r.stdout != "alive\n" {
		t.Fatalf("login after the hostile clients: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
