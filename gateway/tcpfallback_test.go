package gateway

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestQUICOverTCPAndShutdown: a client reaches the relay with QUIC carried
// over TLS to the API port (ALPN tunnel-tcp/1), and the gateway's graceful
// shutdown ends such a connection: Close returns cleanly and the client's
// connection ends. (That shutdown closes them at once, rather than Shutdown
// waiting for them, is transport.TestStreamPacketsCloseConns.)
func TestQUICOverTCPAndShutdown(t *testing.T) {
	ctx := context.Background()
	res, err := Init(ctx, InitConfig{DataDir: filepath.Join(t.TempDir(), "gw"), Cluster: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(ctx, Config{DataDir: res.DataDir, APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	cert := userCert(t, g, "alice")
	base := trust.PinnedClientConfig(g.Pin(), "localhost", nil)
	outer := base.Clone()
	outer.NextProtos = []string{wire.ALPNTCP}
	c, err := tls.Dial("tcp", g.Addr().String(), outer)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != wire.ALPNTCP {
		t.Fatalf("negotiated %q; want %s", p, wire.ALPNTCP)
	}
	pc := transport.NewStreamPacketConn(c)
	tr := &quic.Transport{Conn: pc}
	defer func() { tr.Close(); pc.Close() }()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := tr.Dial(dctx, c.RemoteAddr(),
		transport.ClientTLS(base, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }), transport.QUICConfig())
	if err != nil {
		t.Fatalf("QUIC over TCP: %v", err)
	}
	st, err := conn.OpenStreamSync(dctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindDial, Target: "nowhere/svc"}); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	if rep, err := wire.ReadReply(st); err != nil || rep.Status != wire.StatusUnavailable && rep.Status != wire.StatusDenied {
		t.Fatalf("reply over QUIC over TCP: %+v, %v; want a refusal from the relay", rep, err)
	}

	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	defer scancel()
	if err := g.Close(sctx); err != nil {
		t.Errorf("Close with a QUIC-over-TCP connection open: %v; want a clean shutdown", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(30 * time.Second):
		t.Errorf("the client's connection outlived the gateway")
	}
}
