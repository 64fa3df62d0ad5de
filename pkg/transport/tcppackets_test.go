package transport

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/quic-go/quic-go"
)

// quicOverTCP runs a QUIC listener on StreamPackets fed by a TCP listener,
// and dials n clients over TCP; it returns the client connections and the
// server's listener.
func quicOverTCP(t *testing.T, n int) ([]*quic.Conn, *quic.Listener) {
	t.Helper()
	ctx := testContext(t)
	stls, ctls := testTLS(t)
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := NewStreamPackets(tln.Addr(), nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sp.Serve(c)
			}()
		}
	}()
	str := &quic.Transport{Conn: sp}
	ln, err := str.Listen(stls, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		str.Close()
		tln.Close()
		sp.Close()
		wg.Wait()
	})
	var conns []*quic.Conn
	for range n {
		c, err := net.Dial("tcp", tln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		pc := NewStreamPacketConn(c)
		ctr := &quic.Transport{Conn: pc}
		qc, err := ctr.Dial(ctx, c.RemoteAddr(), ctls, QUICConfig())
		if err != nil {
			t.Fatalf("QUIC over TCP: dial: %v", err)
		}
		t.Cleanup(func() {
			qc.CloseWithError(CodeNoError, "")
			ctr.Close()
			pc.Close()
		})
		conns = append(conns, qc)
	}
	return conns, ln
}

// TestQUICOverTCP: QUIC runs unchanged over framed TCP connections, several
// peers behind one StreamPackets: bytes arrive whole both ways, and a
// stream reset keeps its code (the gateway's cut reasons).
func TestQUICOverTCP(t *testing.T) {
	ctx := testContext(t)
	conns, ln := quicOverTCP(t, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					st, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						var b [1]byte
						if _, err := io.ReadFull(st, b[:]); err != nil {
							return
						}
						if b[0] == 'R' { // reset with the revoked code
							st.CancelWrite(StreamRevoked)
							st.CancelRead(StreamRevoked)
							return
						}
						_, _ = io.Copy(st, st) // echo
						_ = st.Close()
					}()
				}
			}()
		}
	}()
	payload := make([]byte, 4<<20)
	_, _ = rand.Read(payload)
	for i, c := range conns {
		st, err := c.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = st.Write([]byte{'E'})
			_, _ = st.Write(payload)
			_ = st.Close()
		}()
		got, err := io.ReadAll(st)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("peer %d: echo of 4 MiB: %d bytes, %v", i, len(got), err)
		}
		st, err = c.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = st.Write([]byte{'R'})
		_, err = io.ReadAll(st)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != StreamRevoked {
			t.Errorf("peer %d: reset stream: %v; want the revoked code", i, err)
		}
	}
	for _, c := range conns {
		c.CloseWithError(CodeNoError, "")
	}
}

// ReadFrame refuses a frame longer than the limit or the buffer, and a
// truncated one.
func TestReadFrame(t *testing.T) {
	b, err := AppendFrame(nil, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxFramedPacket)
	if n, err := ReadFrame(bytes.NewReader(b), buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("ReadFrame = %q, %v", buf[:n], err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0xff, 0xff, 1, 2}), buf); !errors.Is(err, ErrFrame) {
		t.Errorf("a 65535-byte frame: %v; want ErrFrame", err)
	}
	if _, err := ReadFrame(bytes.NewReader(b), make([]byte, 3)); !errors.Is(err, ErrFrame) {
		t.Errorf("a frame longer than the buffer: %v; want ErrFrame", err)
	}
	if _, err := ReadFrame(bytes.NewReader(b[:4]), buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a truncated frame: %v; want io.ErrUnexpectedEOF", err)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxFramedPacket+1)); !errors.Is(err, ErrFrame) {
		t.Errorf("AppendFrame of a too long packet: %v", err)
	}
}

// FuzzReadFrame: hostile bytes on a QUIC-over-TCP connection never panic
// nor read past their frame.
func FuzzReadFrame(f *testing.F) {
	good, _ := AppendFrame(nil, []byte("packet"))
	f.Add(good)
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		buf := make([]byte, MaxFramedPacket)
		for {
			before := r.Len()
			n, err := ReadFrame(r, buf)
			if err != nil {
				return
			}
			if used := before - r.Len(); used != n+2 {
				t.Fatalf("read %d bytes for a %d-byte frame", used, n)
			}
		}
	})
}

// CloseConns ends every QUIC-over-TCP connection (their Serve return) and
// leaves the PacketConn open: a connection made afterwards is served.
func TestStreamPacketsCloseConns(t *testing.T) {
	sp := NewStreamPackets(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, nil)
	defer sp.Close()
	serve := func() (net.Conn, chan struct{}) {
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			sp.Serve(b)
		}()
		return a, done
	}
	c1, done1 := serve()
	defer c1.Close()
	// The peer is registered once a frame came through.
	f, _ := AppendFrame(nil, []byte("one"))
	go c1.Write(f)
	buf := make([]byte, MaxFramedPacket)
	if n, _, err := sp.ReadFrom(buf); err != nil || string(buf[:n]) != "one" {
		t.Fatalf("ReadFrom = %q, %v", buf[:n], err)
	}
	sp.CloseConns()
	<-done1 // Serve returned
	c2, done2 := serve()
	defer func() { c2.Close(); <-done2 }()
	f, _ = AppendFrame(nil, []byte("two"))
	go c2.Write(f)
	if n, _, err := sp.ReadFrom(buf); err != nil || string(buf[:n]) != "two" {
		t.Fatalf("after CloseConns: ReadFrom = %q, %v; want the new connection served", buf[:n], err)
	}
}
