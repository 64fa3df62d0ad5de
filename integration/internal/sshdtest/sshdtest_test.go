package sshdtest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// newCA returns a fresh ed25519 CA signer.
func newCA(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newUser returns a fresh user key and a 1-minute user certificate for it,
// for principal, signed by ca. Signed with x/crypto/ssh directly (not the
// certs package) so this test checks sshdtest on its own.
func newUser(t *testing.T, ca ssh.Signer, principal string) (ed25519.PrivateKey, *ssh.Certificate) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             sshPub,
		Serial:          1,
		CertType:        ssh.UserCert,
		KeyId:           "sshdtest-" + principal,
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(now.Add(-30 * time.Second).Unix()), // clock skew
		ValidBefore:     uint64(now.Add(time.Minute).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "",
		}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return priv, cert
}

// runSSH runs the OpenSSH client and returns its stdout, stderr and exit code.
func runSSH(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	sshBin := testenv.LookPath(t, "ssh")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sshBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running ssh: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("ssh timed out; stderr:\n%s", errb.String())
	}
	return out.String(), errb.String(), code
}

// waitLog waits briefly for sshd to log want (the per-connection child may
// log just after the client has gone).
func waitLog(t *testing.T, srv *sshdtest.Server, want string) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(srv.Log(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("sshd log does not contain %q (full log is printed below)", want)
			return
		}
	}
}

func TestCertLogin(t *testing.T) {
	t.Parallel()
	user := testenv.CurrentUser(t)
	ca := newCA(t)
	srv := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{ca.PublicKey()}})

	priv, cert := newUser(t, ca, user)
	key, certFile := sshdtest.WriteIdentity(t, priv, cert)
	args := append(srv.SSHArgs(key, certFile), user+"@127.0.0.1", "echo", "hello")
	out, errOut, code := runSSH(t, args...)
	if code != 0 || strings.TrimSpace(out) != "hello" {
		t.Fatalf("ssh exit %d, stdout %q, want 0 and \"hello\"; stderr:\n%s", code, out, errOut)
	}
	waitLog(t, srv, "Accepted publickey for "+user)
}

func TestCertFromOtherCARefused(t *testing.T) {
	t.Parallel()
	user := testenv.CurrentUser(t)
	trusted, other := newCA(t), newCA(t)
	srv := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{trusted.PublicKey()}})

	priv, cert := newUser(t, other, user)
	key, certFile := sshdtest.WriteIdentity(t, priv, cert)
	args := append(srv.SSHArgs(key, certFile), user+"@127.0.0.1", "echo", "hello")
	out, errOut, code := runSSH(t, args...)
	if code != 255 || out != "" {
		t.Fatalf("ssh exit %d, stdout %q, want 255 and no output; stderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "Permission denied") {
		t.Errorf("ssh stderr %q does not say Permission denied", errOut)
	}
	waitLog(t, srv, "Failed publickey for "+user)
}

func TestRevokedKeyRefused(t *testing.T) {
	t.Parallel()
	user := testenv.CurrentUser(t)
	ca := newCA(t)
	priv, cert := newUser(t, ca, user)
	srv := sshdtest.Start(t, sshdtest.Config{
		TrustedUserCAKeys: []ssh.PublicKey{ca.PublicKey()},
		RevokedKeys:       []ssh.PublicKey{cert.Key},
	})

	key, certFile := sshdtest.WriteIdentity(t, priv, cert)
	args := append(srv.SSHArgs(key, certFile), user+"@127.0.0.1", "true")
	if out, errOut, code := runSSH(t, args...); code != 255 {
		t.Fatalf("ssh exit %d (stdout %q), want 255; stderr:\n%s", code, out, errOut)
	}
	waitLog(t, srv, "revoked by file")
}

func TestWrongPrincipalRefused(t *testing.T) {
	t.Parallel()
	user := testenv.CurrentUser(t)
	ca := newCA(t)
	srv := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{ca.PublicKey()}})

	priv, cert := newUser(t, ca, user+"-not")
	key, certFile := sshdtest.WriteIdentity(t, priv, cert)
	args := append(srv.SSHArgs(key, certFile), user+"@127.0.0.1", "true")
	if out, errOut, code := runSSH(t, args...); code != 255 {
		t.Fatalf("ssh exit %d (stdout %q), want 255; stderr:\n%s", code, out, errOut)
	}
	waitLog(t, srv, "not a listed principal")
}

// TestHostCertificate checks that a host certificate is served: a client
// that trusts only the host CA (no pinned key) connects.
func TestHostCertificate(t *testing.T) {
	t.Parallel()
	user := testenv.CurrentUser(t)
	userCA, hostCA := newCA(t), newCA(t)

	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	hostCert := &ssh.Certificate{
		Key:             hostSigner.PublicKey(),
		CertType:        ssh.HostCert,
		KeyId:           "sshdtest-host",
		ValidPrincipals: []string{"127.0.0.1"},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := hostCert.SignCert(rand.Reader, hostCA); err != nil {
		t.Fatal(err)
	}
	srv := sshdtest.Start(t, sshdtest.Config{
		TrustedUserCAKeys: []ssh.PublicKey{userCA.PublicKey()},
		HostKey:           hostPriv,
		HostCertificate:   hostCert,
	})
	if got, want := ssh.FingerprintSHA256(srv.HostKey), ssh.FingerprintSHA256(hostSigner.PublicKey()); got != want {
		t.Fatalf("Server.HostKey %s, want %s", got, want)
	}

	// Check with x/crypto/ssh: accept only a host cert from hostCA.
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return string(auth.Marshal()) == string(hostCA.PublicKey().Marshal())
	}}
	priv, cert := newUser(t, userCA, user)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ssh.Dial("tcp", srv.Addr, &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(certSigner)},
		HostKeyCallback:   checker.CheckHostKey,
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01},
		Timeout:           5 * time.Second,
	})
	if err != nil {
		t.Fatalf("x/crypto/ssh dial with host CA: %v", err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output("echo hello")
	if err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("echo hello: %q, %v", out, err)
	}
}
