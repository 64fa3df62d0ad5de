package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

func TestCutMessage(t *testing.T) {
	const target = "db-1/postgres"
	expired := errors.New("your login certificate expired at 2030-01-01 12:00:00: run tunnel login, then start tunnel proxy again")
	tests := []struct {
		name  string
		cause error
		local error
		want  string
	}{
		{"revoked", &quic.StreamError{ErrorCode: quic.StreamErrorCode(wire.CutRevoked), Remote: true}, nil,
			"connection to db-1/postgres closed by the gateway: access revoked by an administrator"},
		{"expired at the gateway", &quic.StreamError{ErrorCode: quic.StreamErrorCode(wire.CutExpired), Remote: true}, nil,
			"connection to db-1/postgres closed by the gateway: your login certificate expired: run tunnel login, then start tunnel proxy again"},
		{"reset by the service", &quic.StreamError{ErrorCode: quic.StreamErrorCode(wire.CutReset), Remote: true}, nil, ""},
		{"canceled", &quic.StreamError{ErrorCode: quic.StreamErrorCode(wire.CutCanceled), Remote: true}, nil, ""},
		{"unknown code", &quic.StreamError{ErrorCode: 0x77, Remote: true}, nil, ""},
		{"our own reset", &quic.StreamError{ErrorCode: quic.StreamErrorCode(wire.CutReset)}, nil, ""},
		{"closed normally", quic.ErrStreamClosed, nil, ""},
		{"connection revoked", &quic.ApplicationError{ErrorCode: transport.CodeRevoked, ErrorMessage: "access revoked by an administrator", Remote: true}, nil,
			"connection to db-1/postgres closed by the gateway: access revoked by an administrator"},
		{"connection refused", &quic.ApplicationError{ErrorCode: transport.CodeUnauthorized, ErrorMessage: "certificate expired: renew it", Remote: true}, nil,
			"connection to db-1/postgres closed by the gateway: certificate expired: renew it (run tunnel login, then start tunnel proxy again)"},
		{"gateway stops", &quic.ApplicationError{ErrorCode: transport.CodeShutdown, ErrorMessage: "the gateway is shutting down", Remote: true}, nil,
			"connection to db-1/postgres closed by the gateway: the gateway is shutting down"},
		{"we close", &quic.ApplicationError{ErrorCode: transport.CodeShutdown, ErrorMessage: "client closing"}, nil, ""},
		{"idle", &quic.IdleTimeoutError{}, nil, "connection to db-1/postgres lost: the gateway stopped answering"},
		{"stateless reset", &quic.StatelessResetError{}, nil, "connection to db-1/postgres lost: the gateway restarted"},
		{"our expiry", &quic.StreamError{ErrorCode: quic.StreamErrorCode(wire.CutReset)}, expired,
			"connection to db-1/postgres closed: " + expired.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := cutMessage(target, tc.cause, tc.local); got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
}

// connOpener opens streams on one QUIC connection.
type connOpener struct{ c *quic.Conn }

func (o connOpener) OpenStream(ctx context.Context) (*quic.Stream, error) {
	return o.c.OpenStreamSync(ctx)
}

// fakeGateway accepts QUIC connections, answers each stream's header with
// OK, echoes, and hands the stream to the test to cut.
type fakeGateway struct {
	ln      *quic.Listener
	conns   chan *quic.Conn
	streams chan *quic.Stream
	// echoed gets each stream whose echo ended (the client's end of the
	// stream reached the gateway).
	echoed chan *quic.Stream
}

func startFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	stls := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{wire.ALPN},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}}
	ln, err := quic.ListenAddr("127.0.0.1:0", stls, transport.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{ln: ln, conns: make(chan *quic.Conn, 4), streams: make(chan *quic.Stream, 4), echoed: make(chan *quic.Stream, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			g.conns <- c
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					st, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					if _, err := wire.ReadHeader(st); err != nil {
						return
					}
					if err := wire.WriteReply(st, wire.Reply{Status: wire.StatusOK}); err != nil {
						return
					}
					g.streams <- st
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _ = io.Copy(st, st)
						g.echoed <- st
					}()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return g
}

// TestProxyReportsCuts runs a real Forwarder with the cutReporter against
// a fake gateway over QUIC, cuts its streams the ways the gateway does,
// and checks the lines tunnel proxy prints.
func TestProxyReportsCuts(t *testing.T) {
	tests := []struct {
		name string
		cut  func(c *quic.Conn, st *quic.Stream)
		want string
		// after, if set, runs once the client's own end of the stream
		// reached the gateway.
		after func(st *quic.Stream)
		// denied is what the proxy is told the gateway refuses (it then
		// stops); "" for nothing.
		denied string
	}{
		{"stream revoked", func(_ *quic.Conn, st *quic.Stream) {
			st.CancelRead(transport.StreamRevoked)
			st.CancelWrite(transport.StreamRevoked)
		}, "connection to db-1/postgres closed by the gateway: access revoked by an administrator\n", nil, ""},
		// The relay's order (RESET_STREAM, then STOP_SENDING), with the
		// second arriving only after the forwarder answered the first
		// with its own reset: the cut is reported all the same.
		{"stream revoked, reset first", func(_ *quic.Conn, st *quic.Stream) {
			st.CancelWrite(transport.StreamRevoked)
		}, "connection to db-1/postgres closed by the gateway: access revoked by an administrator\n", func(st *quic.Stream) {
			st.CancelRead(transport.StreamRevoked)
		}, ""},
		{"stream reset", func(_ *quic.Conn, st *quic.Stream) {
			st.CancelRead(transport.StreamReset)
			st.CancelWrite(transport.StreamReset)
		}, "", nil, ""},
		{"stream reset, reset first", func(_ *quic.Conn, st *quic.Stream) {
			st.CancelWrite(transport.StreamReset)
		}, "", func(st *quic.Stream) {
			st.CancelRead(transport.StreamReset)
		}, ""},
		{"connection revoked", func(c *quic.Conn, _ *quic.Stream) {
			c.CloseWithError(transport.CodeRevoked, "access revoked by an administrator")
		}, "connection to db-1/postgres closed by the gateway: access revoked by an administrator\n", nil, "access revoked by an administrator"},
		{"connection refused", func(c *quic.Conn, _ *quic.Stream) {
			c.CloseWithError(transport.CodeUnauthorized, "user alice is locked")
		}, "connection to db-1/postgres closed by the gateway: user alice is locked (run tunnel login, then start tunnel proxy again)\n", nil, "user alice is locked"},
		{"gateway stops", func(c *quic.Conn, _ *quic.Stream) {
			c.CloseWithError(transport.CodeShutdown, "the gateway is shutting down")
		}, "connection to db-1/postgres closed by the gateway: the gateway is shutting down\n", nil, ""},
		{"service closes", func(_ *quic.Conn, st *quic.Stream) {
			st.CancelRead(transport.StreamCanceled)
			st.Close()
		}, "", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := startFakeGateway(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ctls := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{wire.ALPN}}
			qc, err := quic.DialAddr(ctx, g.ln.Addr().String(), ctls, transport.QUICConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer qc.CloseWithError(0, "")
			gc := <-g.conns
			var out syncBuf
			var denied syncBuf
			cuts := &cutReporter{opener: connOpener{qc}, target: "db-1/postgres", out: &out,
				denied: func(ae *quic.ApplicationError) { denied.Write([]byte(ae.ErrorMessage)) }}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			// As tunnel proxy sets it up.
			f := &transport.Forwarder{Listener: ln, Opener: cuts, Target: "db-1/postgres", Carry: cuts.carry(nil)}
			fctx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- f.Serve(fctx) }()

			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
				t.Fatalf("echo through the forwarder: %q, %v", buf, err)
			}
			gst := <-g.streams
			tc.cut(gc, gst)
			// The local connection ends (reset or FIN) once the cut
			// reaches the forwarder.
			_, _ = io.Copy(io.Discard, c)
			if tc.after != nil {
				if got := <-g.echoed; got != gst {
					t.Fatal("another stream's echo ended")
				}
				tc.after(gst)
			}
			stop()
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			cuts.Close()
			if got := out.String(); got != tc.want {
				t.Errorf("tunnel proxy printed %q; want %q", got, tc.want)
			}
			if got := denied.String(); got != tc.denied {
				t.Errorf("tunnel proxy was told the gateway refuses %q; want %q", got, tc.denied)
			}
			// A new stream on the closed connection tells it again.
			if tc.denied != "" {
				denied = syncBuf{}
				if _, err := cuts.OpenStream(ctx); err == nil {
					t.Fatal("a stream opened on a connection the gateway closed")
				}
				if got := denied.String(); got != tc.denied {
					t.Errorf("a new stream: the proxy was told %q; want %q", got, tc.denied)
				}
			}
		})
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Clone(s.b.String())
}
