package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// A gateway that refuses a connection at its first packet (its admission:
// too many connections being set up) is busy, not incompatible: the agent
// says so and retries with its ordinary backoff.
func TestExplainConnectBusy(t *testing.T) {
	err := &quic.TransportError{Remote: true, ErrorCode: quic.ConnectionRefused}
	ce := explainConnect(err, "gw.example.com:8443", nil)
	want := "the gateway at gw.example.com:8443 is busy: it refused this connection for now (it sets up only so many at once, from everyone and from this address; if this lasts, its network rules may refuse this address: tunnel admin network ls); retrying with backoff"
	if ce.kind != failBusy || ce.Error() != want {
		t.Fatalf("got kind %d, %q\nwant kind %d, %q", ce.kind, ce.Error(), failBusy, want)
	}
	if !errors.Is(ce, err) {
		t.Fatal("the cause is not wrapped")
	}
}

// The refusal a busy gateway sends is the one explainConnect takes for
// busy: a real QUIC server whose admission is full refuses a real dial.
func TestBusyGatewayRefusalIsBusy(t *testing.T) {
	srvTLS, cliTLS := busyTLS(t)
	adm := transport.NewAdmission(1, 0)
	tr := &quic.Transport{Conn: listenUDP(t), ConnContext: adm.ConnContext(nil)}
	defer tr.Close()
	ln, err := tr.Listen(srvTLS, transport.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := quic.DialAddr(ctx, ln.Addr().String(), cliTLS, transport.QUICConfig())
	if err != nil {
		t.Fatalf("first dial: %v", err)
	}
	defer first.CloseWithError(0, "")
	// The first connection is never admitted (verified): it holds the
	// one slot, and the second is refused at once.
	_, err = quic.DialAddr(ctx, ln.Addr().String(), cliTLS, transport.QUICConfig())
	if ce := explainConnect(err, "gw:1", nil); ce.kind != failBusy {
		t.Fatalf("second dial: %v, explained as kind %d %q; want busy", err, ce.kind, ce.Error())
	}
	if adm.Refused() == 0 || adm.InProgress() != 1 {
		t.Fatalf("admission: %d refused, %d in progress; want some and 1", adm.Refused(), adm.InProgress())
	}
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// busyTLS is a server with a fresh self-signed certificate and a client
// that does not check it (the tests here are about the refusal).
func busyTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{wire.ALPN},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}}
	client = &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{wire.ALPN}, InsecureSkipVerify: true} //nolint:gosec // test
	return server, client
}
