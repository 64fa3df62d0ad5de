package jumphost

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const cluster = "prod"

// env is a jump host on loopback with a real store, CA and session
// manager. Channels it grants reach an echo server instead of a node's
// agent (the fake opener), so a test can tell a working channel.
type env struct {
	t     *testing.T
	store *sqlitestore.Store
	ca    *certs.Authority
	sess  *sessions.Manager
	jump  *Server
	addr  string
	echo  string // the echo server standing for every node's SSH endpoint

	mu     sync.Mutex
	opened []store.Session // sessions the fake opener carried
}

// newEnv starts a jump host; configure may set timeouts or the opener
// before it serves. Users bob and alice hold the role ops (login ubuntu
// on web-*); the agents web-1 and web-2 are enrolled.
func newEnv(t *testing.T, configure ...func(*Server)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatalf("sqlitestore.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := certs.Generate(certs.Config{Cluster: cluster})
	if err != nil {
		t.Fatalf("certs.Generate: %v", err)
	}
	e := &env{t: t, store: st, ca: ca}
	now := time.Now()
	must(t, st.CreateRole(ctx, store.Role{Name: "ops", Logins: []string{"ubuntu"}, Nodes: []string{"web-*"}, CreatedAt: now}, event(audit.RoleCreated, "ops")))
	for _, u := range []string{"bob", "alice"} {
		e.addUser(u, "ops")
	}
	for _, a := range []string{"web-1", "web-2"} {
		e.addAgent(a)
	}
	e.sess = &sessions.Manager{Store: st, CA: ca}
	must(t, e.sess.Start(ctx))
	t.Cleanup(e.sess.Close)
	e.echo = startEcho(t)
	e.jump = &Server{Store: st, CA: ca, Sessions: e.sess, Names: []string{"127.0.0.1", "localhost"}}
	e.jump.open = e.openEcho
	for _, f := range configure {
		f(e.jump)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- e.jump.Serve(ln) }()
	t.Cleanup(func() {
		if err := e.jump.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Close; want nil", err)
		}
	})
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func event(typ audit.Type, subject string) audit.Event {
	return audit.Event{Time: time.Now(), Type: typ, Actor: "admin", Subject: subject, Outcome: audit.Success}
}

func (e *env) addUser(name string, roles ...string) {
	e.t.Helper()
	must(e.t, e.store.CreateUser(context.Background(), store.User{Name: name, PasswordHash: "x", Roles: roles, CreatedAt: time.Now()}, event(audit.UserCreated, name)))
}

func (e *env) addAgent(name string) {
	e.t.Helper()
	ctx := context.Background()
	h := sha256.Sum256([]byte("token-" + name))
	tok := store.JoinToken{Hash: hex.EncodeToString(h[:]), Agent: name, CreatedBy: "admin", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	must(e.t, e.store.CreateJoinToken(ctx, tok, event(audit.TokenCreated, name)))
	_, err := e.store.ConsumeJoinToken(ctx, tok.Hash, time.Now(), event(audit.AgentEnrolled, name))
	must(e.t, err)
}

func (e *env) lockUser(name string, locked bool) {
	e.t.Helper()
	typ := audit.UserUnlocked
	if locked {
		typ = audit.UserLocked
	}
	must(e.t, e.store.SetUserLocked(context.Background(), name, locked, event(typ, name)))
}

// revokeSerial revokes one certificate by serial, the user staying
// unlocked.
func (e *env) revokeSerial(cert *gossh.Certificate) {
	e.t.Helper()
	_, err := e.store.RevokeCertificates(context.Background(), store.RevokeFilter{Serial: certs.SSHSerialHex(cert), Kind: store.CertSSHUser},
		time.Now(), event(audit.CertRevoked, certs.SSHSerialHex(cert)))
	must(e.t, err)
}

// certOpts changes a login certificate before it is issued.
type certOpts struct {
	session  string        // a session certificate
	ttl      time.Duration // default 1 h
	noRecord bool          // not recorded in the store
}

// loginCert issues and records a login certificate for user, as tunnel
// login does, and returns a signer holding it.
func (e *env) loginCert(user string, o certOpts) (gossh.Signer, *gossh.Certificate) {
	e.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	must(e.t, err)
	signer, err := gossh.NewSignerFromKey(priv)
	must(e.t, err)
	ttl := o.ttl
	if ttl == 0 {
		ttl = time.Hour
	}
	cert, err := e.ca.IssueSSHUser(certs.SSHUserRequest{User: user, Principals: []string{"ubuntu"}, PublicKey: signer.PublicKey(),
		TTL: ttl, SessionID: o.session})
	must(e.t, err)
	if !o.noRecord {
		rec := store.IssuedCert{Serial: certs.SSHSerialHex(cert), Kind: store.CertSSHUser, Subject: user, SubjectKind: identity.User,
			NotBefore: time.Unix(int64(cert.ValidAfter), 0), NotAfter: time.Unix(int64(cert.ValidBefore), 0), IssuedAt: time.Now(),
			Principals: cert.ValidPrincipals}
		must(e.t, e.store.RecordCertificates(context.Background(), []store.IssuedCert{rec}, []audit.Event{event(audit.CertIssued, rec.Serial)}))
	}
	cs, err := gossh.NewCertSigner(cert, signer)
	must(e.t, err)
	return cs, cert
}

// dial logs in to the jump host as sshUser with signer; on failure it
// returns the error and the banner the jump host sent.
func (e *env) dial(sshUser string, signer gossh.Signer) (*gossh.Client, string, error) {
	e.t.Helper()
	var banner strings.Builder
	checker := &gossh.CertChecker{IsHostAuthority: func(auth gossh.PublicKey, _ string) bool {
		for _, ca := range e.ca.SSHHostCAs() {
			if string(ca.Marshal()) == string(auth.Marshal()) {
				return true
			}
		}
		return false
	}}
	c, err := gossh.Dial("tcp", e.addr, &gossh.ClientConfig{
		User:            sshUser,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: checker.CheckHostKey,
		BannerCallback:  func(m string) error { banner.WriteString(m); return nil },
		Timeout:         10 * time.Second,
	})
	return c, banner.String(), err
}

// login is dial that must succeed.
func (e *env) login(user string) (*gossh.Client, *gossh.Certificate) {
	e.t.Helper()
	signer, cert := e.loginCert(user, certOpts{})
	c, banner, err := e.dial(user, signer)
	if err != nil {
		e.t.Fatalf("login as %s: %v (banner %q)", user, err, banner)
	}
	e.t.Cleanup(func() { c.Close() })
	return c, cert
}

// echoThrough opens a direct-tcpip channel to target through c and checks
// that it carries bytes both ways.
func echoThrough(c *gossh.Client, target string) error {
	ch, err := c.Dial("tcp", target)
	if err != nil {
		return err
	}
	defer ch.Close()
	_ = ch.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("ping " + target + "\n")
	if _, err := ch.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(ch, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("the echo came back changed: " + string(got))
	}
	return nil
}

// openEcho is the fake opener: the node's SSH endpoint is the echo server.
func (e *env) openEcho(_ context.Context, _ string, sess store.Session, _ []string, _ string) (transport.Endpoint, func(in, out int64), error) {
	nc, err := net.Dial("tcp", e.echo)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	e.opened = append(e.opened, sess)
	e.mu.Unlock()
	return transport.TCP{TCPConn: nc.(*net.TCPConn)}, func(in, out int64) {
		e.sess.Closed(context.Background(), sess.ID)
	}, nil
}

func (e *env) sessionsOpened() []store.Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]store.Session(nil), e.opened...)
}

// startEcho serves an echo on loopback until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// waitClosed waits for c's connection to end; it fails the test if it is
// still open after a generous while.
func waitClosed(t *testing.T, c *gossh.Client, why string) {
	t.Helper()
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the connection is still open; want it closed (%s)", why)
	}
}
