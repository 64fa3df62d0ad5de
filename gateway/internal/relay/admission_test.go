package relay

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/servercert"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// A connection counts against the gateway's admission (connections being
// set up) only until the relay has verified its peer: with room for one
// setup at a time, agents that connected and were verified leave the room
// to the next, and a connection still being set up makes the next one
// busy.
func TestAdmissionEndsWhenThePeerIsVerified(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sc, err := servercert.FromCA(h.ca, "gw", []string{"localhost", "127.0.0.1"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	adm := transport.NewAdmission(1, 0)
	tr := &quic.Transport{Conn: udp, ConnContext: adm.ConnContext(nil)}
	ln, err := tr.Listen(transport.ServerTLS(sc.GetCertificate), transport.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Store: h.db, CA: h.ca, Audit: auditlog.New(h.db)}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-served
		ln.Close()
		tr.Close()
		udp.Close()
		srv.Audit.Close()
	})
	dial := func(cert *tls.Certificate) (*quic.Conn, error) {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		cfg := transport.ClientTLS(trust.PinnedClientConfig(h.ca.Pin(), "localhost", nil),
			func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
		return quic.DialAddr(dctx, ln.Addr().String(), cfg, transport.QUICConfig())
	}
	for _, name := range []string{"db-1", "db-2", "db-3"} {
		h.enrol(name)
		c, err := dial(h.cert(identity.Agent, name))
		if err != nil {
			t.Fatalf("agent %s: %v", name, err)
		}
		if !hello(c) {
			t.Fatalf("agent %s: no welcome (its connection still counts as being set up?)", name)
		}
		defer c.CloseWithError(0, "")
	}
	// A client that completes its handshake but is never verified (the
	// relay waits for it to be accepted: here it is, and it is refused
	// as unknown, which ends it) frees its slot too.
	h.enrol("db-4")
	if _, err := dial(foreignCert(t)); err != nil {
		t.Fatalf("foreign certificate: the handshake itself should pass: %v", err)
	}
	waitFor(t, "the refused connection's slot freed", func() bool { return adm.InProgress() == 0 })
	c, err := dial(h.cert(identity.Agent, "db-4"))
	if err != nil || !hello(c) {
		t.Fatalf("agent db-4 after a refused connection: %v", err)
	}
	defer c.CloseWithError(0, "")
	if adm.Refused() != 0 {
		t.Fatalf("%d connections refused as busy; want none", adm.Refused())
	}
}
