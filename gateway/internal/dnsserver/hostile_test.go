package dnsserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/panics"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}

// TestHostileClients throws at the server what scanners and attackers
// send (ISSUE7): connect-and-close, garbage, half messages, thousands of
// silent connections, one source over its cap and floods of UDP junk. The
// server lives, answers a real query over UDP and TCP throughout, and
// closes every idle connection by itself.
func TestHostileClients(t *testing.T) {
	if _, err := netguard.RaiseFileLimit(); err != nil {
		t.Logf("raise the open-file limit: %v", err)
	}
	baseline := runtime.NumGoroutine()
	r := start(t, &Server{
		ReadTimeout: time.Second, IdleTimeout: time.Second,
		TCPLimits: netguard.Limits{PerSource: 16, Total: 8192},
	})
	panicsBefore := panics.Count()
	q := query("_tunnel._udp."+zone, dns.TypeSRV)
	realQuery := func(what string) {
		t.Helper()
		// Over UDP, as a stub resolver does: a query lost (the socket's
		// buffer full of junk) is sent again.
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		var in *dns.Msg
		var err error
		for range 10 {
			if in, _, err = c.Exchange(q, r.addr); err == nil {
				break
			}
		}
		if err != nil || in.Rcode != dns.RcodeSuccess || len(in.Answer) != 2 {
			t.Fatalf("%s: real UDP query (10 tries) got %v, %v", what, in, err)
		}
		if in := r.exchange(t, "tcp", q); in.Rcode != dns.RcodeSuccess || len(in.Answer) != 2 {
			t.Fatalf("%s: real TCP query got %v", what, in)
		}
	}
	realQuery("at start")

	// Connect and close, many times from one source (some are reset at
	// once by the per-source cap while the server has not yet seen the
	// earlier ones close: fine) and from many.
	for i := range 1000 {
		src := "127.0.0.5"
		if i%2 == 1 {
			src = fmt.Sprintf("127.0.3.%d", 1+i%200)
		}
		c, err := dialFrom(t, src, r.addr)
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				continue
			}
			t.Fatalf("connect-and-close: %v", err)
		}
		c.Close()
	}
	realQuery("after 1000 connect-and-close")

	// Garbage over TCP: every one is closed by the server (checked at the
	// end, with the silent ones).
	var garbage []net.Conn
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		c, err := dialFrom(t, fmt.Sprintf("127.0.2.%d", 1+i), r.addr)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 1+rng.IntN(600))
		for j := range junk {
			junk[j] = byte(rng.UintN(256))
		}
		if i%5 == 0 {
			junk[0], junk[1] = 0, byte(rng.UintN(12)) // a length below a header
		}
		c.Write(junk)
		garbage = append(garbage, c)
	}
	realQuery("after garbage")

	// A half message: a length, some of its bytes, then silence.
	half, err := dialFrom(t, "127.0.0.7", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	half.Write([]byte{1, 44, 0xab, 0xcd, 0, 0, 0, 1})
	// A well-formed query over a connection that then goes silent.
	idle, err := dialFrom(t, "127.0.0.7", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	packed, _ := q.Pack()
	idle.Write(append([]byte{byte(len(packed) >> 8), byte(len(packed))}, packed...))

	// Thousands of silent connections from 200 sources, and one source
	// far over its cap.
	var silent []net.Conn
	for i := range 2000 {
		c, err := dialFrom(t, fmt.Sprintf("127.0.%d.%d", 10+i/200, 1+i%200), r.addr)
		if err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
		silent = append(silent, c)
	}
	for range 64 {
		c, err := dialFrom(t, "127.0.0.8", r.addr)
		if err != nil {
			continue // refused at once: fine
		}
		silent = append(silent, c)
	}
	realQuery("with 2000 silent connections open")

	// Floods of UDP junk from several sources, some with a query's header.
	var wg sync.WaitGroup
	for s := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.1.%d:0", s+1))
			if err != nil {
				t.Error(err)
				return
			}
			defer pc.Close()
			dst, _ := net.ResolveUDPAddr("udp", r.addr)
			rng := rand.New(rand.NewPCG(uint64(s), 7))
			for i := range 5000 {
				junk := make([]byte, rng.IntN(700))
				for j := range junk {
					junk[j] = byte(rng.UintN(256))
				}
				if i%3 == 0 && len(junk) >= headerLen {
					copy(junk, packed[:headerLen]) // a plausible header, junk after it
				}
				pc.WriteTo(junk, dst)
			}
		}()
	}
	wg.Wait()
	realQuery("after 20,000 UDP junk packets")

	// The server closes every silent, half and idle connection by itself.
	expectClosed(t, half, "half message")
	buf := make([]byte, 2048)
	idle.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := idle.Read(buf); err != nil || n < 2 {
		t.Fatalf("the idle connection's query got no answer: %v", err)
	}
	expectClosed(t, idle, "idle after one query")
	for _, c := range garbage {
		expectClosed(t, c, "garbage")
	}
	for _, c := range silent {
		expectClosed(t, c, "silent")
	}
	waitFor(t, "every TCP connection to be closed", func() bool { return r.Stats().TCPConns == 0 })
	if st := r.tcpLim.Stats(); st.RefusedPerSource < 64-16 {
		t.Errorf("per-source cap refused %d connections of 127.0.0.8; want at least %d", st.RefusedPerSource, 64-16)
	}
	realQuery("at the end")
	if got := panics.Count() - panicsBefore; got != 0 {
		t.Errorf("%d panics recovered; want none", got)
	}
	st := r.Stats()
	if st.Malformed == 0 || st.RateLimited == 0 {
		t.Errorf("stats %+v; want malformed queries and rate-limited ones counted", st)
	}

	// Every goroutine of the server ends with it.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server's goroutines to end", func() bool { return runtime.NumGoroutine() <= baseline+2 })
}

// expectClosed waits (generously) for the server to close c.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // a FORMERR before the close
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%s connection still open after 30 s", what)
		}
		return
	}
}

// TestTCPMessageFraming checks pipelined queries on one connection and a
// query split across writes.
func TestTCPMessageFraming(t *testing.T) {
	r := start(t, &Server{})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stream []byte
	for i := range 3 {
		m := query("gw-gw1."+zone, dns.TypeA)
		m.Id = uint16(100 + i)
		p, _ := m.Pack()
		stream = binary.BigEndian.AppendUint16(stream, uint16(len(p)))
		stream = append(stream, p...)
	}
	// Byte by byte for the first query, the rest at once.
	for _, b := range stream[:10] {
		c.Write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	c.Write(stream[10:])
	dc := &dns.Conn{Conn: c}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range 3 {
		in, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if in.Id != uint16(100+i) || len(in.Answer) != 1 {
			t.Fatalf("answer %d: id %d, %d answers; want id %d, 1", i, in.Id, len(in.Answer), 100+i)
		}
	}
}
