package transport

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// resumeServer is a QUIC server whose tickets are sealed by t; it echoes
// one stream per connection and reports, for each connection, whether it
// resumed and the client certificate it restored or received.
type resumeServer struct {
	ln   *quic.Listener
	mu   sync.Mutex
	seen []resumeSeen
	wg   sync.WaitGroup
}

type resumeSeen struct {
	resumed bool
	leaf    []byte
}

func startResumeServer(t *testing.T, tickets *Tickets) *resumeServer {
	t.Helper()
	base, _ := testTLS(t)
	conf := ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &base.Certificates[0], nil })
	if tickets != nil {
		tickets.Install(conf)
	}
	// An explicit Transport, closed in the cleanup: a listener from
	// quic.ListenAddr closes its transport only once its connections are
	// gone, which may be after the goroutine leak check has run.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(conf, QUICConfig())
	if err != nil {
		tr.Close()
		udp.Close()
		t.Fatal(err)
	}
	s := &resumeServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept(t.Context())
			if err != nil {
				return
			}
			cs := c.ConnectionState().TLS
			var leaf []byte
			if len(cs.PeerCertificates) > 0 {
				leaf = cs.PeerCertificates[0].Raw
			}
			s.mu.Lock()
			s.seen = append(s.seen, resumeSeen{resumed: cs.DidResume, leaf: leaf})
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				st, err := c.AcceptStream(t.Context())
				if err != nil {
					return
				}
				_, _ = io.Copy(st, st)
				st.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tr.Close()
		udp.Close()
		s.wg.Wait()
	})
	return s
}

func (s *resumeServer) last(t *testing.T) resumeSeen {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		t.Fatal("the server saw no connection")
	}
	return s.seen[len(s.seen)-1]
}

// resumeDial connects with cert to s (as server name name, the session
// cache's key), makes one round trip (by then the session ticket has
// arrived), closes, and reports whether the client resumed.
func resumeDial(t *testing.T, s *resumeServer, name string, cert *tls.Certificate) bool {
	t.Helper()
	_, base := testTLS(t)
	base.ServerName = name
	conf := ClientTLS(base, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
	c, err := quic.DialAddr(testContext(t), s.ln.Addr().String(), conf, QUICConfig())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseWithError(0, "")
	st, err := c.OpenStreamSync(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if b, err := io.ReadAll(st); err != nil || string(b) != "ping" {
		t.Fatalf("echo: %q, %v", b, err)
	}
	return c.ConnectionState().TLS.DidResume
}

// clientCert is a fresh self-signed client certificate.
func clientCert(t *testing.T) *tls.Certificate {
	t.Helper()
	srv, _ := testTLS(t)
	return &srv.Certificates[0]
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, TicketSecretSize) }

// A client reconnecting with the same certificate resumes, also with a
// restarted server that has the same ticket secret, and the server still
// gets the client's certificate (restored from the ticket) to verify.
func TestResumptionSurvivesARestart(t *testing.T) {
	cert := clientCert(t)
	tk1, err := NewTickets(secret(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	s1 := startResumeServer(t, tk1)
	if resumeDial(t, s1, "restart.test", cert) {
		t.Fatal("the first connection resumed")
	}
	if resumeDial(t, s1, "restart.test", cert) != true || !s1.last(t).resumed {
		t.Fatal("the second connection to the same server did not resume")
	}
	s1.ln.Close()
	tk2, _ := NewTickets(secret(1), nil) // the restarted gateway
	s2 := startResumeServer(t, tk2)
	if !resumeDial(t, s2, "restart.test", cert) {
		t.Fatal("the connection to the restarted server (same secret) did not resume")
	}
	got := s2.last(t)
	if !got.resumed || !bytes.Equal(got.leaf, cert.Certificate[0]) {
		t.Fatalf("restarted server: resumed %v, client certificate restored %v; want both", got.resumed, bytes.Equal(got.leaf, cert.Certificate[0]))
	}
}

// Another secret (another gateway, a removed secret file) means a full
// handshake, not a failure.
func TestResumptionOtherSecretFullHandshake(t *testing.T) {
	cert := clientCert(t)
	tk1, _ := NewTickets(secret(2), nil)
	s1 := startResumeServer(t, tk1)
	resumeDial(t, s1, "other.test", cert)
	tk2, _ := NewTickets(secret(3), nil)
	s2 := startResumeServer(t, tk2)
	if resumeDial(t, s2, "other.test", cert) {
		t.Fatal("resumed with a ticket sealed under another secret")
	}
	if got := s2.last(t); got.resumed || !bytes.Equal(got.leaf, cert.Certificate[0]) {
		t.Fatal("the full handshake did not present the client certificate")
	}
}

// A ticket is kept per client certificate: a second identity in the same
// process (or the agent after a renewal) never resumes with the first
// one's ticket, which would present the first identity.
func TestResumptionKeyedByClientCertificate(t *testing.T) {
	a, b := clientCert(t), clientCert(t)
	tk, _ := NewTickets(secret(4), nil)
	s := startResumeServer(t, tk)
	resumeDial(t, s, "keyed.test", a)
	if resumeDial(t, s, "keyed.test", b) {
		t.Fatal("certificate b resumed with a's ticket")
	}
	if got := s.last(t); !bytes.Equal(got.leaf, b.Certificate[0]) {
		t.Fatal("the server saw another certificate than b's")
	}
	if !resumeDial(t, s, "keyed.test", a) || !bytes.Equal(s.last(t).leaf, a.Certificate[0]) {
		t.Fatal("a did not resume with its own ticket")
	}
}

// A ticket is accepted in its epoch and the next, not after.
func TestResumptionTicketsExpire(t *testing.T) {
	cert := clientCert(t)
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	tk, _ := NewTickets(secret(5), clock)
	s := startResumeServer(t, tk)
	resumeDial(t, s, "expire.test", cert)
	advance(TicketEpoch)
	if !resumeDial(t, s, "expire.test", cert) {
		t.Fatal("a ticket of the previous epoch was refused")
	}
	// That connection got a new ticket, sealed in this epoch: two epochs
	// later it is refused.
	advance(2 * TicketEpoch)
	if resumeDial(t, s, "expire.test", cert) {
		t.Fatal("a ticket two epochs old was accepted")
	}
}

func TestTicketsDamagedSecret(t *testing.T) {
	if _, err := NewTickets(make([]byte, 31), nil); err == nil {
		t.Fatal("a 31-byte secret was accepted")
	}
}
