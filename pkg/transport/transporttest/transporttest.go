// Package transporttest is for tests only: network conditions a QUIC
// connection must survive, such as a gateway that dies without a word
// and another process that takes its address. Use [Listen] for the
// gateway's socket, [MutedConn.Kill] for its SIGKILL, and [Listen] again
// on the same address for its restart.
package transporttest

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// MutedConn is a UDP socket that can be struck dumb, as a process killed
// with SIGKILL: once killed it sends nothing (no CONNECTION_CLOSE leaves
// it) and hears nothing. It is a plain net.PacketConn (not a
// *net.UDPConn), so that quic-go reads and writes through ReadFrom and
// WriteTo.
type MutedConn struct {
	net.PacketConn
	dead atomic.Bool
}

// Kill strikes the socket dumb; close it afterwards to free its port.
func (c *MutedConn) Kill() { c.dead.Store(true) }

// WriteTo implements net.PacketConn: after Kill the packet is dropped.
func (c *MutedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.dead.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// ReadFrom implements net.PacketConn: after Kill what arrives is dropped.
func (c *MutedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.dead.Load() {
			return n, addr, err
		}
	}
}

// Listen binds a MutedConn to addr ("127.0.0.1:0" for a free port). The
// port of a socket closed a moment ago may take a few tries to bind again
// on a busy machine, so it retries for a few seconds. The socket is
// closed at the end of the test, if not before.
func Listen(t testing.TB, addr string) *MutedConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		var c *net.UDPConn
		if c, err = net.ListenUDP("udp", ua); err == nil {
			t.Cleanup(func() { c.Close() })
			return &MutedConn{PacketConn: c}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("bind %s: %v", addr, err)
	return nil
}
