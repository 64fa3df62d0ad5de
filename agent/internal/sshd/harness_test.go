package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// env is a test world: a user CA, a host CA, a running server, and
// sessions the fake gateway knows.
type env struct {
	t       *testing.T
	dir     string
	login   string
	userCA  gossh.Signer
	hostCA  gossh.Signer
	srv     *Server
	addr    *net.TCPAddr
	knownHs string
	logs    *syncBuffer

	mu       sync.Mutex
	sessions map[string]Session
	revoked  map[uint64]bool
	records  map[string]*fakeRecorder
	serial   uint64
}

type envOption func(*Config)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	testenv.LookPath(t, "ssh")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t:        t,
		dir:      t.TempDir(),
		login:    u.Username,
		userCA:   newSigner(t),
		hostCA:   newSigner(t),
		logs:     &syncBuffer{},
		sessions: map[string]Session{},
		revoked:  map[uint64]bool{},
		records:  map[string]*fakeRecorder{},
		serial:   100,
	}
	hostKey := newSigner(t)
	hostCert := &gossh.Certificate{
		Key:             hostKey.PublicKey(),
		Serial:          1,
		CertType:        gossh.HostCert,
		KeyId:           "host=test serial=1",
		ValidPrincipals: []string{"127.0.0.1", "localhost"},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := hostCert.SignCert(rand.Reader, e.hostCA); err != nil {
		t.Fatal(err)
	}
	hostSigner, err := gossh.NewCertSigner(hostCert, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	e.knownHs = filepath.Join(e.dir, "known_hosts")
	writeFile(t, e.knownHs, "@cert-authority * "+string(gossh.MarshalAuthorizedKey(e.hostCA.PublicKey())))

	cfg := Config{
		HostSigner: hostSigner,
		UserCAs:    func() []gossh.PublicKey { return []gossh.PublicKey{e.userCA.PublicKey()} },
		LookupSession: func(_ context.Context, id string, _ uint64) (Session, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			s, ok := e.sessions[id]
			if !ok {
				return Session{}, errors.New("session revoked by an administrator")
			}
			return s, nil
		},
		IsRevoked: func(serial uint64) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.revoked[serial]
		},
		Record: func(s Session, w, h int, term string) (Recorder, error) {
			r := &fakeRecorder{width: w, height: h, term: term}
			e.mu.Lock()
			defer e.mu.Unlock()
			e.records[s.ID] = r
			return r, nil
		},
		Log: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().(*net.TCPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		e.srv.Close()
		e.srv.Close() // idempotent
		if err := <-done; err != nil && !errors.Is(err, ErrServerClosed) && !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", e.logs.String())
		}
	})
	return e
}

// addSession registers a session with the fake gateway.
func (e *env) addSession(s Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.Login == "" {
		s.Login = e.login
	}
	if s.User == "" {
		s.User = "alice"
	}
	if s.Deadline.IsZero() {
		s.Deadline = time.Now().Add(time.Hour)
	}
	e.sessions[s.ID] = s
}

func (e *env) record(id string) *fakeRecorder {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.records[id]
}

// identity is a user key and its certificate, written to files for ssh.
type identity struct {
	keyFile, certFile string
	cert              *gossh.Certificate
}

// certOpts shapes a test certificate; the zero value is a good one.
type certOpts struct {
	session     string
	principals  []string // nil means the login
	noPrincipal bool
	validAfter  time.Time
	validBefore time.Time
	certType    uint32
	signer      gossh.Signer // nil means the user CA
	noExt       bool
	plain       bool // no certificate at all
	keyID       string
}

func (e *env) newIdentity(name string, o certOpts) identity {
	t := e.t
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	id := identity{keyFile: filepath.Join(e.dir, name)}
	writeFile(t, id.keyFile, string(pem.EncodeToMemory(block)))
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, id.keyFile+".pub", string(gossh.MarshalAuthorizedKey(sshPub)))
	if o.plain {
		return id
	}
	e.mu.Lock()
	e.serial++
	serial := e.serial
	e.mu.Unlock()
	cert := &gossh.Certificate{
		Key:             sshPub,
		Serial:          serial,
		CertType:        gossh.UserCert,
		KeyId:           fmt.Sprintf("user=alice serial=%x session=%s", serial, o.session),
		ValidPrincipals: o.principals,
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: gossh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "",
		}},
	}
	if o.keyID != "" {
		cert.KeyId = o.keyID
	}
	if o.principals == nil && !o.noPrincipal {
		cert.ValidPrincipals = []string{e.login}
	}
	if !o.validAfter.IsZero() {
		cert.ValidAfter = uint64(o.validAfter.Unix())
	}
	if !o.validBefore.IsZero() {
		cert.ValidBefore = uint64(o.validBefore.Unix())
	}
	if o.certType != 0 {
		cert.CertType = o.certType
	}
	if o.noExt {
		cert.Extensions = nil
	}
	signer := o.signer
	if signer == nil {
		signer = e.userCA
	}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	id.cert = cert
	id.certFile = id.keyFile + "-cert.pub"
	writeFile(t, id.certFile, string(gossh.MarshalAuthorizedKey(cert)))
	return id
}

// sshArgs are the common options of ssh, scp and sftp; port is -p for ssh
// and -P for scp and sftp.
func (e *env) sshArgs(portFlag string, ids ...identity) []string {
	args := []string{
		"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + e.knownHs,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "ConnectTimeout=10",
		portFlag, strconv.Itoa(e.addr.Port),
	}
	for _, id := range ids {
		args = append(args, "-i", id.keyFile)
		if id.certFile != "" {
			args = append(args, "-o", "CertificateFile="+id.certFile)
		}
	}
	return args
}

type result struct {
	stdout, stderr string
	code           int
}

// ssh runs the OpenSSH client with extra options before the destination,
// then the remote command.
func (e *env) ssh(id identity, extra []string, command ...string) result {
	e.t.Helper()
	args := append(e.sshArgs("-p", id), extra...)
	args = append(args, e.login+"@127.0.0.1")
	args = append(args, command...)
	return e.run(exec.Command("ssh", args...))
}

func (e *env) run(cmd *exec.Cmd) result {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cmd.Stdin == nil {
		cmd.Stdin = bytes.NewReader(nil)
	}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Start()
	if err != nil {
		e.t.Fatal(err)
	}
	timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	err = cmd.Wait()
	timer.Stop()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

func newSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
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

// fakeRecorder keeps a recording in memory.
type fakeRecorder struct {
	width, height int
	term          string

	mu      sync.Mutex
	output  bytes.Buffer
	resizes [][2]int
	closed  bool
}

func (r *fakeRecorder) Output(_ time.Duration, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.output.Write(p)
}

func (r *fakeRecorder) Resize(_ time.Duration, w, h int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resizes = append(r.resizes, [2]int{w, h})
}

func (r *fakeRecorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func (r *fakeRecorder) snapshot() (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.output.String(), r.closed
}
