package dnsstub

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestHostileClients: garbage datagrams, TCP clients that connect and
// close, send half a length or a length and nothing, and many that say
// nothing at all: the stub lives and answers over UDP and TCP.
func TestHostileClients(t *testing.T) {
	s := startStub(t, func(c *Config) { c.MaxTCPConns = 8; c.TCPTimeout = 2 * time.Second })
	udpAddr, tcpAddr := s.addrOf("udp"), s.addrOf("tcp")

	// Garbage datagrams: random bytes, too short, a response (QR set),
	// an UPDATE, two questions, a header claiming records that are missing.
	u, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	rnd := rand.New(rand.NewPCG(1, 2))
	var datagrams [][]byte
	for range 200 {
		b := make([]byte, rnd.IntN(600))
		for i := range b {
			b[i] = byte(rnd.UintN(256))
		}
		datagrams = append(datagrams, b)
	}
	q := new(dns.Msg).SetQuestion("orders-db.prod.tunnel.", dns.TypeA)
	valid, _ := q.Pack()
	resp := append([]byte(nil), valid...)
	resp[2] |= 0x80 // QR
	update := append([]byte(nil), valid...)
	update[2] |= dns.OpcodeUpdate << 3
	twoQ := append([]byte(nil), valid...)
	twoQ[5] = 2
	lies := append([]byte(nil), valid...)
	lies[7] = 200 // ANCOUNT 200, no answers follow
	datagrams = append(datagrams, nil, []byte{0}, valid[:11], valid[:12], valid[:len(valid)-1], resp, update, twoQ, lies)
	for _, d := range datagrams {
		if _, err := u.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	// A valid query after all that is answered. The burst may still fill
	// the socket's receive buffer, where the kernel drops datagrams (UDP),
	// so the client retries, as every resolver does.
	if r := askRetrying(t, s, "orders-db.prod.tunnel."); len(r.Answer) != 1 {
		t.Fatalf("after garbage: %v", r)
	}
	if st := s.Stats(); st.Answered != 1 {
		t.Errorf("stats %+v: garbage reached the handler, or a response was answered", st)
	}

	// TCP: connect and close; half a length; a length and nothing; a
	// length longer than what follows, then close.
	for _, payload := range [][]byte{nil, {0}, {0, 40}, append([]byte{0, 200}, valid...)} {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(payload)
		_ = c.Close()
	}

	// Many silent TCP clients, far more than MaxTCPConns.
	var silent []net.Conn
	for range 40 {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			_ = c.Close()
		}
	}()
	for _, network := range []string{"udp", "tcp"} {
		if r := ask(t, s, network, "orders-db.prod.tunnel.", dns.TypeA); len(r.Answer) != 1 {
			t.Fatalf("%s with 40 silent TCP clients: %v", network, r)
		}
	}
	if st := s.Stats(); st.TCPEvicted < 40-8 {
		t.Errorf("stats %+v: want at least %d TCP connections evicted", st, 40-8)
	}
	// A silent client is closed by the stub: within the timeout, or
	// evicted earlier. Its read ends (EOF or reset), it does not hang.
	last := silent[len(silent)-1]
	_ = last.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := last.Read(make([]byte, 1)); err == nil {
		t.Fatal("the stub sent bytes to a silent client")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the stub kept a silent TCP connection open for 30 s (its timeout is 2 s)")
	}
}

// TestTCPPipelined: several queries on one TCP connection, answered in
// order (the idle timeout applies between them, not the connection).
func TestTCPPipelined(t *testing.T) {
	s := startStub(t, nil)
	c, err := net.Dial("tcp", s.addrOf("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	names := []string{"orders-db.prod.tunnel.", "nosuch.prod.tunnel.", "example.com."}
	for i, n := range names {
		m := new(dns.Msg).SetQuestion(n, dns.TypeA)
		m.Id = uint16(i + 1)
		b, _ := m.Pack()
		if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(b)))); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	want := []int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeRefused}
	for i := range names {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			t.Fatal(err)
		}
		if r.Id != uint16(i+1) || r.Rcode != want[i] {
			t.Errorf("answer %d: id %d rcode %s, want id %d rcode %s", i, r.Id, dns.RcodeToString[r.Rcode], i+1, dns.RcodeToString[want[i]])
		}
	}
}

// askRetrying asks over UDP up to 5 times, 2 s each.
func askRetrying(t *testing.T, s *Server, name string) *dns.Msg {
	t.Helper()
	var err error
	for range 5 {
		var r *dns.Msg
		r, err = tryAsk(s, "udp", name, dns.TypeA, func(c *dns.Client, _ *dns.Msg) { c.Timeout = 2 * time.Second })
		if err == nil {
			return r
		}
	}
	t.Fatalf("no answer to 5 UDP queries for %s: %v", name, err)
	return nil
}
