package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// fakeGateway is a QUIC endpoint that, like the relay, refuses a locked
// agent with CodeUnauthorized and the gateway's reason, and otherwise reads
// the hello and welcomes the agent.
type fakeGateway struct {
	ca     *certs.Authority
	ln     *quic.Listener
	locked atomic.Bool
	// refusals counts the connections refused.
	refusals atomic.Int32
	welcomed atomic.Int32
	// streams counts the streams the agent opened after the welcome.
	streams atomic.Int32
	// down makes the gateway close every connection and refuse new ones,
	// as a gateway that is shutting down.
	down     atomic.Bool
	downNow  chan struct{}
	downOnce sync.Once
	wg       sync.WaitGroup
}

// goDown closes every connection and refuses the next ones.
func (g *fakeGateway) goDown() {
	g.down.Store(true)
	g.downOnce.Do(func() { close(g.downNow) })
}

const lockedReason = "agent db-1 is locked by an administrator: tunnel admin agents unlock db-1"

func newCA(t testing.TB, cluster string) *certs.Authority {
	t.Helper()
	ca, err := certs.Generate(certs.Config{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func startFakeGateway(t *testing.T, ca *certs.Authority) *fakeGateway {
	t.Helper()
	ln, err := quic.ListenAddr("127.0.0.1:0", fakeGatewayTLS(t, ca), transport.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	return serveFakeGateway(t, ca, ln)
}

// fakeGatewayTLS is the TLS configuration of a gateway of ca's cluster
// on 127.0.0.1.
func fakeGatewayTLS(t *testing.T, ca *certs.Authority) *tls.Config {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueX509Server(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Gateway, Name: "gw"},
		PublicKey: pub, TTL: time.Hour, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.X509CA().Raw}, PrivateKey: priv, Leaf: leaf}
	return transport.ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil })
}

// serveFakeGateway serves ln as a fake gateway of ca's cluster until the
// test ends.
func serveFakeGateway(t *testing.T, ca *certs.Authority, ln *quic.Listener) *fakeGateway {
	t.Helper()
	g := &fakeGateway{ca: ca, ln: ln, downNow: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.serve(ctx, c)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		g.wg.Wait()
	})
	return g
}

func (g *fakeGateway) addr() string { return g.ln.Addr().String() }

func (g *fakeGateway) serve(ctx context.Context, c *quic.Conn) {
	if g.down.Load() {
		c.CloseWithError(transport.CodeShutdown, "gateway shutting down")
		return
	}
	if g.locked.Load() {
		g.refusals.Add(1)
		c.CloseWithError(transport.CodeUnauthorized, lockedReason)
		return
	}
	st, err := c.AcceptStream(ctx)
	if err != nil {
		return
	}
	if h, err := wire.ReadHeader(st); err != nil || h.Kind != wire.KindControl {
		c.CloseWithError(transport.CodeProtocol, "the first stream must be the control stream")
		return
	}
	if m, err := wire.ReadControl(st); err != nil || m.Type != wire.MsgHello {
		c.CloseWithError(transport.CodeProtocol, "the control stream must start with hello")
		return
	}
	if err := wire.WriteControl(st, wire.Control{Type: wire.MsgWelcome}); err != nil {
		return
	}
	g.welcomed.Add(1)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			st, err := c.AcceptStream(ctx)
			if err != nil {
				return
			}
			g.streams.Add(1)
			st.CancelRead(transport.StreamCanceled)
			st.CancelWrite(transport.StreamCanceled)
		}
	}()
	select {
	case <-ctx.Done():
		c.CloseWithError(transport.CodeShutdown, "test over")
	case <-g.downNow:
		c.CloseWithError(transport.CodeShutdown, "gateway shutting down")
	case <-c.Context().Done():
	}
}

// testAgent is an agent of ca's cluster named db-1, with an identity for
// gateway and a log kept in memory; it is not started.
func testAgent(t testing.TB, ca *certs.Authority, gateway string) (*Agent, *syncBuffer) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Agent, Name: "db-1"},
		PublicKey: pub, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a := &Agent{
		cfg:      Config{File: &FileConfig{}},
		log:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		services: map[string]Expose{},
		id: &Identity{Name: "db-1", Cluster: ca.Cluster(), Gateway: gateway, Pin: ca.Pin(),
			CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))},
		retry:        transport.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		retryRefused: transport.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		expect:       newExpected(),
	}
	a.peers = newPeerPool(a)
	a.cert.Store(&tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c})
	return a, logs
}

// runConnect runs the connection manager until the test ends.
func runConnect(t *testing.T, a *Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.connect(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A locked agent keeps trying, says so once (not at every attempt), is
// not "connected", and connects by itself once the gateway lets it in.
func TestConnectRetriesWhileLockedAndComesBack(t *testing.T) {
	ca := newCA(t, "prod")
	g := startFakeGateway(t, ca)
	g.locked.Store(true)
	a, logs := testAgent(t, ca, g.addr())
	var connected []string
	var mu sync.Mutex
	a.cfg.Connected = func(gw string) {
		mu.Lock()
		defer mu.Unlock()
		connected = append(connected, gw)
	}
	runConnect(t, a)

	waitUntil(t, "several refused attempts", func() bool { return g.refusals.Load() >= 4 })
	out := logs.String()
	const said = "the gateway refuses this agent: locked by an administrator; retrying until it is unlocked"
	if n := strings.Count(out, `level=WARN msg="`+said+`"`); n != 1 {
		t.Errorf("the locked state was logged %d times over %d attempts; want once:\n%s", n, g.refusals.Load(), out)
	}
	if n := strings.Count(out, "still cannot connect to the gateway; retrying"); n < 2 {
		t.Errorf("%d retries logged at debug level; want one per attempt after the first", n)
	}
	if !strings.Contains(out, `gateway_says="`+lockedReason+`"`) {
		t.Errorf("the gateway's reason is not in the log:\n%s", out)
	}
	mu.Lock()
	if len(connected) != 0 || strings.Contains(out, "connected to the gateway") {
		t.Errorf("a refused agent said it was connected (%v):\n%s", connected, out)
	}
	mu.Unlock()
	if len(a.connected()) != 0 {
		t.Error("a refused agent has a session")
	}

	g.locked.Store(false) // agents unlock
	waitUntil(t, "the agent to connect after the unlock", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(connected) == 1
	})
	if got := connected[0]; got != g.addr() || g.welcomed.Load() != 1 || len(a.connected()) != 1 {
		t.Errorf("connected to %q, welcomed %d times, sessions to %v; want %s, once, one session", got, g.welcomed.Load(), a.connected(), g.addr())
	}
}

// Against a gateway of another cluster, the agent says the pin does not
// match, and never says connected.
func TestConnectPinMismatch(t *testing.T) {
	g := startFakeGateway(t, newCA(t, "other"))
	a, logs := testAgent(t, newCA(t, "prod"), g.addr())
	a.cfg.Connected = func(string) { t.Error("Connected called for a gateway of another cluster") }
	runConnect(t, a)
	want := "the gateway at " + g.addr() + " does not present the cluster CA this agent trusts (wrong --ca-pin, or another gateway at this address): check --gateway and --ca-pin against what tunnel-gateway init printed"
	waitUntil(t, "the pin mismatch to be logged", func() bool { return strings.Contains(logs.String(), want) })
	if g.welcomed.Load() != 0 {
		t.Error("the agent went on past a certificate that does not match its pin")
	}
}

// No answer over UDP: the failure says UDP may be blocked, and whether the
// gateway's TCP port answers.
func TestDialNoAnswerIsExplained(t *testing.T) {
	// A UDP port with nobody behind it, and a TCP listener on the same
	// number.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close() // silent: reads nothing, answers nothing
	addr := pc.LocalAddr().String()
	_, port, _ := net.SplitHostPort(addr)
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	ca := newCA(t, "prod")
	a, _ := testAgent(t, ca, addr)
	// The message says how long the agent waited.
	_, err = a.dial(context.Background(), tr, addr, 300*time.Millisecond)
	if err == nil {
		t.Fatal("dial to a silent UDP port succeeded")
	}
	base := "no answer from the gateway at " + addr + " over UDP within 300ms"
	for _, tt := range []struct {
		name  string
		probe func(string) error
		kind  failKind
		want  string
	}{
		{"TCP answers", func(string) error { return nil }, failUDPBlocked,
			base + ", yet its TCP port answers: UDP to " + addr + " is probably blocked; open UDP port " + port + " in the firewalls between this machine and the gateway"},
		{"TCP refused", func(string) error { return &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED} }, failNoAnswer,
			base + ", and nothing listens on TCP port " + port + " there either: check that tunnel-gateway is running on 127.0.0.1 and that --gateway " + addr + " is its address (UDP to " + addr + " may also be blocked by a firewall)"},
		{"TCP silent", func(string) error { return context.DeadlineExceeded }, failNoAnswer,
			base + ": UDP to " + addr + " may be blocked; check the firewalls for UDP port " + port + " (the gateway's QUIC port, the same number as its API port) and that tunnel-gateway is running there"},
		// Not blocked UDP either: the port is not a gateway's.
		{"TCP answers as SSH", func(string) error { return &notGateway{what: "an SSH server"} }, failOther,
			base + ", and its TCP port answers as an SSH server, not a tunnel gateway: check --gateway (a gateway's address is its --api-addr, :8443 by default; the jump host's SSH port is another)"},
		// Not blocked UDP (which would move the agent to QUIC over TCP):
		// a gateway too busy to answer.
		{"the gateway restarted a moment ago", func(string) error { return errRestarting }, failBusy,
			base + ", less than a minute after it restarted: it is most likely busy taking its agents back; retrying with backoff"},
	} {
		ce := explainConnect(err, addr, tt.probe)
		if ce.kind != tt.kind || ce.Error() != tt.want {
			t.Errorf("%s: got kind %d, %q\nwant kind %d, %q", tt.name, ce.kind, ce.Error(), tt.kind, tt.want)
		}
	}
}

func TestExplainConnect(t *testing.T) {
	const gw = "gw.example.com:8443"
	for _, tt := range []struct {
		name string
		err  error
		kind failKind
		want string
	}{
		{"DNS", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "gw.example.com", IsNotFound: true}}, failDNS,
			"cannot resolve the gateway's host gw.example.com (no such host): check --gateway and this machine's DNS"},
		{"DNS server down", &net.DNSError{Err: "server misbehaving", Name: "gw.example.com", IsTemporary: true}, failDNS,
			"cannot resolve the gateway's host gw.example.com (server misbehaving): check --gateway and this machine's DNS"},
		{"locked", &afterHandshake{&quic.ApplicationError{Remote: true, ErrorCode: transport.CodeUnauthorized, ErrorMessage: lockedReason}}, failLocked,
			"the gateway refuses this agent: locked by an administrator; retrying until it is unlocked"},
		{"revoked", &quic.ApplicationError{Remote: true, ErrorCode: transport.CodeUnauthorized, ErrorMessage: "your certificate was revoked by an administrator"}, failRefused,
			"the gateway refuses this agent's certificate: your certificate was revoked by an administrator"},
		{"another cluster's certificate", &quic.ApplicationError{Remote: true, ErrorCode: transport.CodeUnauthorized, ErrorMessage: "your certificate was not issued by this cluster"}, failRefused,
			"the gateway refuses this agent's certificate: your certificate was not issued by this cluster; if the cluster's CA was rotated while this agent was away, enrol it again: stop it, remove identity.sealed from its --data-dir, and start it with a new --token"},
		{"gateway stopping", &quic.ApplicationError{Remote: true, ErrorCode: transport.CodeShutdown, ErrorMessage: "the gateway is shutting down"}, failOther,
			"the gateway is shutting down"},
		{"TLS, not the pin", &quic.TransportError{ErrorCode: 0x12a}, failTLS,
			"the gateway's TLS certificate is not acceptable (CRYPTO_ERROR 0x12a (local): tls: bad certificate): check --gateway (the name must be one the gateway's certificate carries) and this machine's clock"},
		{"no welcome", &afterHandshake{os.ErrDeadlineExceeded}, failOther,
			"the gateway at gw.example.com:8443 accepted the connection but did not answer the agent's hello within 30s: check the gateway's log"},
		{"replaced", &quic.ApplicationError{Remote: true, ErrorCode: transport.CodeReplaced, ErrorMessage: "replaced by a newer connection of the same agent"}, failOther,
			"the gateway closed this connection: replaced by a newer connection of the same agent (is another tunnel-agent running with a copy of this data directory?)"},
		{"other", errors.New("something odd"), failOther,
			"cannot connect to the gateway at gw.example.com:8443: something odd"},
	} {
		ce := explainConnect(tt.err, gw, nil)
		if ce.kind != tt.kind || ce.Error() != tt.want {
			t.Errorf("%s: got kind %d, %q\nwant kind %d, %q", tt.name, ce.kind, ce.Error(), tt.kind, tt.want)
		}
		if !errors.Is(ce, tt.err) {
			t.Errorf("%s: the cause is not wrapped", tt.name)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// openOne opens a stream through the agent and sends a byte on it, so the
// gateway that carries it sees it.
func openOne(t *testing.T, a *Agent) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := a.OpenStream(ctx)
	if err != nil {
		return err
	}
	_, err = st.Write([]byte{0})
	return err
}

// An agent given several gateways connects to every one (saying so for
// each), opens its streams through one that is connected, and when that
// gateway goes away opens the next stream through another at once.
func TestConnectsToEveryGatewayAndFailsOver(t *testing.T) {
	ca := newCA(t, "prod")
	g1, g2 := startFakeGateway(t, ca), startFakeGateway(t, ca)
	a, logs := testAgent(t, ca, g1.addr()+","+g2.addr())
	var mu sync.Mutex
	var connected []string
	a.cfg.Connected = func(gw string) {
		mu.Lock()
		defer mu.Unlock()
		connected = append(connected, gw)
	}
	runConnect(t, a)
	waitUntil(t, "connections to both gateways", func() bool { return len(a.connected()) == 2 })
	mu.Lock()
	if len(connected) != 2 || !slices.Contains(connected, g1.addr()) || !slices.Contains(connected, g2.addr()) {
		t.Errorf("Connected called with %v; want each of %s and %s once", connected, g1.addr(), g2.addr())
	}
	mu.Unlock()

	if err := openOne(t, a); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first gateway to see the stream", func() bool { return g1.streams.Load() == 1 })

	g1.goDown()
	waitUntil(t, "the agent to notice the first gateway is gone", func() bool { return len(a.connected()) == 1 })
	if err := openOne(t, a); err != nil {
		t.Fatalf("with the first gateway gone, opening a stream failed: %v", err)
	}
	waitUntil(t, "the second gateway to see the stream", func() bool { return g2.streams.Load() == 1 })
	if got := a.connected(); len(got) != 1 || got[0] != g2.addr() {
		t.Errorf("connected to %v; want only %s", got, g2.addr())
	}
	out := logs.String()
	if !strings.Contains(out, `msg="disconnected from the gateway; reconnecting" gateway=`+g1.addr()) {
		t.Errorf("the loss of the first gateway is not logged with its address:\n%s", out)
	}

	g2.goDown()
	waitUntil(t, "the agent to notice the second gateway is gone", func() bool { return len(a.connected()) == 0 })
	if err := openOne(t, a); !errors.Is(err, transport.ErrNotConnected) {
		t.Errorf("with no gateway, OpenStream = %v; want ErrNotConnected", err)
	}
}

// A renewal replaces the connection to every gateway.
func TestRenewalReconnectsToEveryGateway(t *testing.T) {
	ca := newCA(t, "prod")
	g1, g2 := startFakeGateway(t, ca), startFakeGateway(t, ca)
	a, _ := testAgent(t, ca, g1.addr()+","+g2.addr())
	runConnect(t, a)
	waitUntil(t, "connections to both gateways", func() bool { return len(a.connected()) == 2 })
	a.reconnectAll()
	waitUntil(t, "a second welcome from each gateway", func() bool { return g1.welcomed.Load() == 2 && g2.welcomed.Load() == 2 })
}

// TestAfterRestart: for a minute after the gateway restarted, a dial waits
// 30 s for its handshake and a timeout means busy; before any restart
// and after that minute, 10 s and the usual diagnosis.
func TestAfterRestart(t *testing.T) {
	now := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name      string
		restarted time.Time
		want      time.Duration
		busy      bool
	}{
		{"never", time.Time{}, transport.HandshakeTimeout, false},
		{"just now", now, restartHandshakeTimeout, true},
		{"59 s ago", now.Add(-59 * time.Second), restartHandshakeTimeout, true},
		{"a minute ago", now.Add(-restartGrace), transport.HandshakeTimeout, false},
	} {
		if hs, busy := afterRestart(tt.restarted, now); hs != tt.want || busy != tt.busy {
			t.Errorf("%s: %s, busy %v; want %s, %v", tt.name, hs, busy, tt.want, tt.busy)
		}
	}
}

// probeTCP tells a port that waits for the client (a gateway's TLS) from
// one that speaks first (an SSH server's banner) and from a closed one.
func TestProbeTCP(t *testing.T) {
	serve := func(banner string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if banner != "" {
					c.Write([]byte(banner))
				}
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		return ln.Addr().String()
	}
	if err := probeTCP(serve("")); err != nil {
		t.Errorf("a port that waits for the client: %v; want nil", err)
	}
	var ng *notGateway
	if err := probeTCP(serve("SSH-2.0-OpenSSH_9.6\r\n")); !errors.As(err, &ng) || ng.what != "an SSH server" {
		t.Errorf("an SSH server: %v; want it named", err)
	}
	if err := probeTCP(serve("220 smtp ready\r\n")); !errors.As(err, &ng) || ng.what != "a server that speaks first" {
		t.Errorf("a server that speaks first: %v", err)
	}
	// A port nothing listens on any more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := probeTCP(closed); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a closed port: %v; want connection refused", err)
	}
}
