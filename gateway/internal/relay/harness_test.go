package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/servercert"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testCluster = "test"

// harness is a relay on a real QUIC listener on loopback, with a real
// store and CA; agents and users are played by QUIC clients in the test.
type harness struct {
	t      *testing.T
	db     *sqlitestore.Store
	ca     *certs.Authority
	srv    *Server
	ln     *quic.Listener
	cancel context.CancelFunc
	served chan error
	logs   *syncBuffer
}

type harnessOpts struct {
	// wrap, if set, wraps the store the relay and its audit writer use.
	wrap func(store.Store) store.Store
	// configure adjusts the server before Serve.
	configure func(*Server)
	// quic adjusts the listener's QUIC configuration.
	quic func(*quic.Config)
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.Generate(certs.Config{Cluster: testCluster})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := servercert.FromCA(ca, "gw", []string{"localhost", "127.0.0.1"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	qc := transport.QUICConfig()
	if o.quic != nil {
		o.quic(qc)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", transport.ServerTLS(sc.GetCertificate), qc)
	if err != nil {
		t.Fatal(err)
	}
	var st store.Store = db
	if o.wrap != nil {
		st = o.wrap(db)
	}
	logs := &syncBuffer{}
	srv := &Server{Store: st, CA: ca, Audit: auditlog.New(st),
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if o.configure != nil {
		o.configure(srv)
	}
	sctx, cancel := context.WithCancel(ctx)
	h := &harness{t: t, db: db, ca: ca, srv: srv, ln: ln, cancel: cancel, served: make(chan error, 1), logs: logs}
	go func() { h.served <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ln.Close()
		srv.Audit.Close()
		db.Close()
		if t.Failed() {
			t.Logf("relay log:\n%s", logs)
		}
	})
	return h
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

var okEvent = audit.Event{Type: audit.UserCreated, Actor: "test", Outcome: audit.Success}

func (h *harness) event() audit.Event {
	ev := okEvent
	ev.Time = time.Now()
	return ev
}

// addUser creates a user with one role listing services.
func (h *harness) addUser(name string, services ...string) {
	h.t.Helper()
	ctx := context.Background()
	role := store.Role{Name: "role-" + name, Services: services, Nodes: []string{"*"}, Logins: []string{"ubuntu"}, CreatedAt: time.Now()}
	if err := h.db.CreateRole(ctx, role, h.event()); err != nil {
		h.t.Fatal(err)
	}
	if err := h.db.CreateUser(ctx, store.User{Name: name, PasswordHash: "x", Roles: []string{role.Name}, CreatedAt: time.Now()}, h.event()); err != nil {
		h.t.Fatal(err)
	}
}

// enrol records an agent.
func (h *harness) enrol(name string) {
	h.t.Helper()
	ctx := context.Background()
	sum := sha256.Sum256([]byte(name))
	hash := hex.EncodeToString(sum[:])
	if err := h.db.CreateJoinToken(ctx, store.JoinToken{Hash: hash, Agent: name, CreatedBy: "test", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}, h.event()); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.db.ConsumeJoinToken(ctx, hash, time.Now(), h.event()); err != nil {
		h.t.Fatal(err)
	}
}

// cert issues and records a client certificate.
func (h *harness) cert(kind identity.Kind, name string) *tls.Certificate {
	h.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	id := identity.ID{Cluster: testCluster, Kind: kind, Name: name}
	c, err := h.ca.IssueX509Client(certs.X509Request{ID: id, PublicKey: pub, TTL: time.Hour})
	if err != nil {
		h.t.Fatal(err)
	}
	rec := store.IssuedCert{Serial: certs.X509SerialHex(c), Kind: store.CertX509, Subject: name, SubjectKind: kind,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: time.Now(), Principals: []string{id.String()}}
	if err := h.db.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{h.event()}); err != nil {
		h.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: priv, Leaf: c}
}

// foreignCert is a client certificate of no cluster.
func foreignCert(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mallory"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dial opens a QUIC connection to the relay presenting cert.
func (h *harness) dial(cert *tls.Certificate) *quic.Conn {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := transport.ClientTLS(trust.PinnedClientConfig(h.ca.Pin(), "localhost", nil),
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
	conn, err := quic.DialAddr(ctx, h.ln.Addr().String(), cfg, transport.QUICConfig())
	if err != nil {
		h.t.Fatalf("dial the relay: %v", err)
	}
	h.t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

// handler serves one delivered stream on a fake agent, after its header.
type handler func(h wire.Header, st *quic.Stream)

// echo answers OK and echoes until the caller's FIN.
func echo(_ wire.Header, st *quic.Stream) {
	if err := wire.WriteReply(st, wire.Reply{Status: wire.StatusOK}); err != nil {
		return
	}
	_, _ = io.Copy(st, st)
	_ = st.Close()
}

// fakeAgent is an agent speaking the wire protocol: control stream and
// hello, then delivered streams to its handlers.
type fakeAgent struct {
	conn *quic.Conn
	wg   sync.WaitGroup
}

// startAgent enrols the agent name, issues its certificate and connects
// it with services (connectAgent).
func (h *harness) startAgent(name string, services map[string]handler) *fakeAgent {
	h.t.Helper()
	h.enrol(name)
	return h.connectAgent(name, h.cert(identity.Agent, name), services)
}

// open opens a dial stream to target (with session, if set), sends
// payload right after the header without waiting, and reads the reply.
func open(t *testing.T, conn *quic.Conn, target, session string, payload []byte) (*quic.Stream, wire.Reply, error) {
	t.Helper()
	st, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindDial, Target: target, Session: session}); err != nil {
		t.Fatal(err)
	}
	if len(payload) > 0 {
		if _, err := st.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	rep, err := wire.ReadReply(st)
	_ = st.SetReadDeadline(time.Time{})
	return st, rep, err
}

// events returns the audit events of type typ.
func (h *harness) events(typ audit.Type) []audit.Event {
	h.t.Helper()
	evs, err := h.db.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []audit.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closeCause returns the application error that closed conn.
func closeCause(t *testing.T, conn *quic.Conn) *quic.ApplicationError {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not close the connection within 30s")
	}
	var ae *quic.ApplicationError
	if !errors.As(context.Cause(conn.Context()), &ae) {
		t.Fatalf("connection closed by %v; want an application error", context.Cause(conn.Context()))
	}
	return ae
}

func certSerial(c *tls.Certificate) string { return certs.X509SerialHex(c.Leaf) }
