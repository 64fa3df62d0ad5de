package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/testenv"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// startGateway runs a gateway in this process with cfg (DataDir and
// APIAddr are filled in) and stops it at the end of the test.
func startGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	ctx := context.Background()
	res, err := Init(ctx, InitConfig{DataDir: filepath.Join(t.TempDir(), "gw"), Cluster: "limits"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.APIAddr = res.DataDir, "127.0.0.1:0"
	g, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Close(sctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return g
}

// userCert creates a user and a recorded certificate for it.
func userCert(t *testing.T, g *Gateway, name string) *tls.Certificate {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	ev := audit.Event{Time: now, Type: audit.UserCreated, Actor: "test", Outcome: audit.Success}
	if err := g.store.CreateUser(ctx, store.User{Name: name, PasswordHash: "x", CreatedAt: now}, ev); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.ID{Cluster: g.Cluster(), Kind: identity.User, Name: name}
	c, err := g.ca.IssueX509Client(certs.X509Request{ID: id, PublicKey: pub, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rec := store.IssuedCert{Serial: certs.X509SerialHex(c), Kind: store.CertX509, Subject: name, SubjectKind: identity.User,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: now, Principals: []string{id.String()}}
	if err := g.store.RecordCertificates(ctx, []store.IssuedCert{rec}, []audit.Event{ev}); err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv}
}

// TestQUICSlotsFreedOnAuthentication: with two unauthenticated QUIC
// connections allowed per source, one source still holds many
// authenticated ones (agents behind one NAT address), because a
// connection gives its per-source slot back once its peer is verified.
func TestQUICSlotsFreedOnAuthentication(t *testing.T) {
	g := startGateway(t, Config{MaxConnsPerSource: 2})
	cfg := trust.PinnedClientConfig(g.Pin(), "localhost", nil)
	for i := range 5 {
		cert := userCert(t, g, fmt.Sprintf("user-%d", i))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := quic.DialAddr(ctx, g.QUICAddr().String(),
			transport.ClientTLS(cfg, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }), transport.QUICConfig())
		cancel()
		if err != nil {
			t.Fatalf("connection %d from one source: %v", i+1, err)
		}
		defer conn.CloseWithError(0, "")
		// A reply to a stream means the relay verified the peer.
		st, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindDial, Target: "nowhere/svc"}); err != nil {
			t.Fatal(err)
		}
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := wire.ReadReply(st); err != nil {
			t.Fatalf("connection %d: no reply to a stream: %v", i+1, err)
		}
	}
}

// TestAPIHandshakeDeadline: a TCP connection that says nothing, and one
// that stops in the middle of its TLS handshake, are closed by the gateway
// once the handshake timeout passes (long before net/http's other
// timeouts, 30 s and more).
func TestAPIHandshakeDeadline(t *testing.T) {
	g := startGateway(t, Config{HandshakeTimeout: time.Second})
	// The first bytes of a TLS record carrying a ClientHello, and no more.
	half := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	for _, tt := range []struct {
		name string
		send []byte
	}{{"silent", nil}, {"half a handshake", half}} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", g.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the gateway kept a %s connection open for 20s; want it closed after the 1s handshake timeout", tt.name)
			}
			t.Logf("closed after %v (err %v)", time.Since(start).Round(time.Millisecond), err)
		})
	}
}

// TestJumpHostAndAPIShareTheCaps: connections to the jump host count
// towards their source's cap on the API too; another source is not
// affected.
func TestJumpHostAndAPIShareTheCaps(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Missing(t, "127.0.0.2 on loopback (Linux)")
	}
	const perSource = 3
	g := startGateway(t, Config{MaxConnsPerSource: perSource, SSHAddr: "127.0.0.1:0"})
	noisy := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	for range perSource {
		c, err := noisy.Dial("tcp", g.SSHAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitForCount(t, g, perSource)
	tlsCfg := trust.PinnedClientConfig(g.Pin(), "localhost", nil)
	handshake := func(d *net.Dialer) error {
		c, err := tls.DialWithDialer(d, "tcp", g.Addr().String(), tlsCfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := handshake(noisy); err == nil {
		t.Error("a TLS handshake from a source holding its cap in jump host connections succeeded; want it refused")
	}
	if err := handshake(&net.Dialer{Timeout: 10 * time.Second}); err != nil {
		t.Errorf("a TLS handshake from another source: %v; want success", err)
	}
	if st := g.tcpLim.Stats(); st.RefusedPerSource != 1 {
		t.Errorf("stats %+v; want one refusal over the per-source cap", st)
	}
}

func waitForCount(t *testing.T, g *Gateway, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for g.tcpLim.Count() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections hold a slot after 30s; want %d", g.tcpLim.Count(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJumpHostHandshakeDeadlineIsWired: --ssh-handshake-timeout reaches
// the jump host: a silent connection is closed after it, well before the
// jump host's default (15 s).
func TestJumpHostHandshakeDeadlineIsWired(t *testing.T) {
	g := startGateway(t, Config{SSHAddr: "127.0.0.1:0", SSHHandshakeTimeout: time.Second})
	c, err := net.Dial("tcp", g.SSHAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c) // the server's banner, then the close
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the jump host kept a silent connection open for 10s; want it closed after the 1s handshake timeout")
	}
}
