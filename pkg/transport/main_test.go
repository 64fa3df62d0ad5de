package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTLS returns a server configuration with a fresh self-signed Ed25519
// certificate, and a client configuration that skips verification (the
// tests here are about transport, not trust).
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "transport test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		NextProtos:   []string{wire.ALPN},
	}
	client = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		NextProtos:         []string{wire.ALPN},
	}
	return server, client
}

// testContext is a context that ends with the test, or after a minute so
// that a hang fails instead of eating the whole test timeout.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// quicListener listens on a loopback UDP port with the tunnel settings.
func quicListener(t testing.TB) *quic.Listener {
	t.Helper()
	stls, _ := testTLS(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// quicConns returns both ends of a QUIC connection on loopback.
func quicConns(t testing.TB) (client, server *quic.Conn) {
	t.Helper()
	ctx := testContext(t)
	stls, ctls := testTLS(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err = quic.DialAddr(ctx, ln.Addr().String(), ctls, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CloseWithError(CodeNoError, "") })
	server, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.CloseWithError(CodeNoError, "") })
	return client, server
}

// quicStreams returns both ends of a fresh bidirectional stream. The
// opener's first byte, which announces the stream, has been consumed.
func quicStreams(t testing.TB) (opened, accepted *quic.Stream) {
	t.Helper()
	ctx := testContext(t)
	cc, sc := quicConns(t)
	opened, err := cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opened.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	accepted, err = sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := accepted.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return opened, accepted
}

// tcpConns returns both ends of a TCP connection on loopback.
func tcpConns(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}
