package sshd

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/user"
	"strings"
	"syscall"
	"testing"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
)

// fakeCtx is a gliderlabs context holding only the final public key.
type fakeCtx struct {
	gliderssh.Context
	key gliderssh.PublicKey
}

func (f fakeCtx) Value(k any) any {
	if k == gliderssh.ContextKeyPublicKey {
		return f.key
	}
	return nil
}

// TestIdentityFromFinalKey: a grant belongs to the key the connection
// authenticated with; a key that was merely offered (and accepted) grants
// nothing, whatever order the handler saw the keys in.
func TestIdentityFromFinalKey(t *testing.T) {
	a, b := newSigner(t).PublicKey(), newSigner(t).PublicKey()
	c := &conn{offered: map[string]*certInfo{
		string(a.Marshal()): {sessionID: "admin"},
		string(b.Marshal()): {sessionID: "low"},
	}}
	g := &grant{key: string(b.Marshal()), sess: Session{ID: "low"}}
	c.grant, c.verified = g, g.key

	tests := []struct {
		name string
		key  gliderssh.PublicKey
		want *grant
	}{
		{"authenticated key", b, g},
		{"offered key", a, nil},
		{"no key", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.identity(fakeCtx{key: tt.key}); got != tt.want {
				t.Errorf("identity = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestLookupOSUser(t *testing.T) {
	_, err := lookupOSUser("no-such-login-for-tunnel-tests", 0)
	if err == nil || err.Error() != `login "no-such-login-for-tunnel-tests" does not exist on this host` {
		t.Errorf("lookup of a missing login = %v; want a clear refusal", err)
	}
	// As a user other than root, only the agent's own login is valid.
	_, err = lookupOSUser("root", 4242)
	if err == nil || !strings.Contains(err.Error(), `can only log in as`) || !strings.Contains(err.Error(), `not as "root"`) {
		t.Errorf("lookup of root by a non-root agent = %v; want a refusal naming both", err)
	}
	u, err := lookupOSUser("root", 0)
	if err != nil {
		t.Fatalf("lookup of root by root: %v", err)
	}
	if u.UID != 0 || !u.Self || u.Shell == "" || u.Home == "" {
		t.Errorf("root = %+v; want uid 0, self, a shell and a home", u)
	}
	if cred := u.credential(); cred == nil || cred.Uid != 0 {
		t.Errorf("credential = %+v; want uid 0 set explicitly", cred)
	}
}

func TestEnvAllowed(t *testing.T) {
	for name, want := range map[string]bool{
		"LANG": true, "LC_ALL": true, "TERM": true, "LC_": false, "PATH": false, "LD_PRELOAD": false,
	} {
		if got := envAllowed(DefaultEnvAllow, name); got != want {
			t.Errorf("envAllowed(%q) = %v; want %v", name, got, want)
		}
	}
}

func TestMessages(t *testing.T) {
	tests := []struct{ got, want string }{
		{idleMessage(15 * time.Minute), "session closed after 15 minutes of inactivity"},
		{idleMessage(time.Minute), "session closed after 1 minute of inactivity"},
		{idleMessage(1500 * time.Millisecond), "session closed after 1.5s of inactivity"},
		{expiredMessage(time.Date(2026, 1, 2, 13, 4, 5, 0, time.UTC)), "session expired at 13:04:05 UTC: run tunnel ssh again for a new session"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q; want %q", tt.got, tt.want)
		}
	}
}

// TestCheckCert covers what OpenSSH cannot easily present, with the clock
// injected.
func TestCheckCert(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	userCA := newSigner(t)
	var cas []gossh.PublicKey
	s, err := New(Config{
		HostSigner:    hostCertSigner(t, newSigner(t)),
		UserCAs:       func() []gossh.PublicKey { return cas },
		LookupSession: func(context.Context, string, uint64) (Session, error) { return Session{}, nil },
		Clock:         func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	cas = []gossh.PublicKey{userCA.PublicKey()}
	remote := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5555}
	mk := func(mod func(*gossh.Certificate), signer gossh.Signer) *gossh.Certificate {
		c := &gossh.Certificate{
			Key:             newSigner(t).PublicKey(),
			Serial:          9,
			CertType:        gossh.UserCert,
			KeyId:           "user=alice serial=9 session=s1",
			ValidPrincipals: []string{"ubuntu"},
			ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
			ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		}
		if mod != nil {
			mod(c)
		}
		if err := c.SignCert(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// A certificate used as a signer: its key is the CA's, but it is a
	// certificate, never an authority.
	caCert := mk(func(c *gossh.Certificate) { c.Key = userCA.PublicKey() }, userCA)
	signedByCert := mk(nil, userCA)
	signedByCert.SignatureKey = caCert // x/crypto refuses to sign so
	tests := []struct {
		name    string
		cert    *gossh.Certificate
		setup   func()
		wantErr string
	}{
		{name: "good", cert: mk(nil, userCA)},
		{name: "expired by the injected clock", cert: mk(func(c *gossh.Certificate) { c.ValidBefore = uint64(now.Add(-time.Second).Unix()) }, userCA), wantErr: "expired"},
		{name: "not yet valid", cert: mk(func(c *gossh.Certificate) { c.ValidAfter = uint64(now.Add(time.Minute).Unix()) }, userCA), wantErr: "not yet valid"},
		{name: "empty principals", cert: mk(func(c *gossh.Certificate) { c.ValidPrincipals = nil }, userCA), wantErr: "no principals"},
		{name: "signed by a certificate", cert: signedByCert, wantErr: "signed by a certificate"},
		{name: "certificate offered as an authority", cert: mk(nil, userCA), setup: func() { cas = []gossh.PublicKey{caCert} }, wantErr: "not signed by a trusted user CA"},
		{name: "source address allowed", cert: mk(func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "192.0.2.1,10.1.0.0/16"}
		}, userCA)},
		{name: "source address refused", cert: mk(func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "192.0.2.1"}
		}, userCA), wantErr: "source-address"},
		{name: "login certificate without SessionFromConn", cert: mk(func(c *gossh.Certificate) { c.KeyId = "user=alice serial=9" }, userCA), wantErr: "names no session"},
		{name: "key id without a user", cert: mk(func(c *gossh.Certificate) { c.KeyId = "serial=9 session=s1" }, userCA), wantErr: "no valid user"},
		{name: "key id with an empty session", cert: mk(func(c *gossh.Certificate) { c.KeyId = "user=alice session=" }, userCA), wantErr: "empty session"},
		{name: "unknown critical option", cert: mk(func(c *gossh.Certificate) {
			c.CriticalOptions = map[string]string{"force-command": "true"}
		}, userCA), wantErr: "unsupported critical option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cas = []gossh.PublicKey{userCA.PublicKey()}
			if tt.setup != nil {
				tt.setup()
			}
			info, err := s.checkCert("ubuntu", remote, tt.cert)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("checkCert: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("checkCert = %v; want an error containing %q", err, tt.wantErr)
			case err == nil && (info.sessionID != "s1" || info.user != "alice"):
				t.Errorf("checkCert = %+v; want session s1 of alice", info)
			}
		})
	}
}

func hostCertSigner(t *testing.T, hostCA gossh.Signer) gossh.Signer {
	t.Helper()
	key := newSigner(t)
	c := &gossh.Certificate{
		Key: key.PublicKey(), CertType: gossh.HostCert, KeyId: "host=test",
		ValidPrincipals: []string{"test"}, ValidBefore: gossh.CertTimeInfinity,
	}
	if err := c.SignCert(rand.Reader, hostCA); err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewCertSigner(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewRequiresHostCertificate(t *testing.T) {
	_, err := New(Config{
		HostSigner:    newSigner(t),
		UserCAs:       func() []gossh.PublicKey { return nil },
		LookupSession: func(context.Context, string, uint64) (Session, error) { return Session{}, nil },
	})
	if err == nil {
		t.Error("New with a plain host key succeeded; want an error")
	}
}

// TestServeConnOnPipe runs a connection over a socket pair hidden behind a
// plain net.Conn, as the agent does over QUIC streams: any net.Conn works. The client checks the host
// certificate against the host CA.
func TestServeConnOnPipe(t *testing.T) {
	userCA, hostCA := newSigner(t), newSigner(t)
	key := newSigner(t)
	cert := &gossh.Certificate{
		Key: key.PublicKey(), Serial: 3, CertType: gossh.UserCert,
		KeyId:           "user=alice serial=3 session=pipe",
		ValidPrincipals: []string{currentLogin(t)},
		ValidBefore:     gossh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, userCA); err != nil {
		t.Fatal(err)
	}
	certSigner, err := gossh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		HostSigner: hostCertSigner(t, hostCA),
		UserCAs:    func() []gossh.PublicKey { return []gossh.PublicKey{userCA.PublicKey()} },
		LookupSession: func(_ context.Context, id string, _ uint64) (Session, error) {
			return Session{ID: id, User: "alice", Login: currentLogin(t), Deadline: time.Now().Add(time.Hour)}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c1, c2 := connPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(context.Background(), c1)
	}()
	hostCheck := &gossh.CertChecker{IsHostAuthority: func(k gossh.PublicKey, _ string) bool {
		return bytes.Equal(k.Marshal(), hostCA.PublicKey().Marshal())
	}}
	cc, chans, reqs, err := gossh.NewClientConn(c2, "test:22", &gossh.ClientConfig{
		User:            currentLogin(t),
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(certSigner)},
		HostKeyCallback: hostCheck.CheckHostKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := gossh.NewClient(cc, chans, reqs)
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("echo over a pipe")
	if err != nil {
		t.Fatalf("Output: %v", err)
	}
	if diff := cmp.Diff("over a pipe\n", string(out)); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	// X11 forwarding is always refused.
	sess2, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	ok, err := sess2.SendRequest("x11-req", true, gossh.Marshal(struct {
		Single        bool
		Proto, Cookie string
		Screen        uint32
	}{Proto: "MIT-MAGIC-COOKIE-1", Cookie: "00"}))
	if err != nil || ok {
		t.Errorf("x11-req = %v, %v; want refused", ok, err)
	}
	// Agent forwarding is refused: the session does not allow it.
	ok, err = sess2.SendRequest("auth-agent-req@openssh.com", true, nil)
	if err != nil || ok {
		t.Errorf("auth-agent-req = %v, %v; want refused", ok, err)
	}
	_ = sess2.Close()
	_ = client.Close()
	<-done
}

func currentLogin(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func TestAsciicast(t *testing.T) {
	var buf bytes.Buffer
	start := time.Unix(1700000000, 0)
	r, err := NewAsciicast(nopCloser{&buf}, 80, 24, "xterm", start)
	if err != nil {
		t.Fatal(err)
	}
	r.Output(time.Second, []byte("h\xc3")) // é split in two
	r.Output(2*time.Second, []byte("\xa9\r\n"))
	r.Resize(3*time.Second, 100, 30)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"width":80,"height":24,"timestamp":1700000000,"env":{"TERM":"xterm"}}
[1,"o","h"]
[2,"o","é\r\n"]
[3,"r","100x30"]
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("asciicast (-want +got):\n%s", diff)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// connPair returns the two ends of a Unix socket pair, each hidden behind
// a type that is only a net.Conn. (net.Pipe cannot carry SSH: both sides
// send their version at once and it has no buffer.)
func connPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = struct{ net.Conn }{c}
	}
	return conns[0], conns[1]
}
