package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
	"github.com/tunnelhq/tunnel/pkg/sshkrl"
)

// TestKRL: the KRL the gateway publishes works with stock OpenSSH. After
// `tunnel admin sessions revoke` and `tunnel admin users lock`, the
// certificates the gateway issued are reported revoked by the real
// `ssh-keygen -Q` and refused by a real sshd with TrustedUserCAKeys and
// RevokedKeys, while a live user's certificate is reported ok and
// accepted; the version grows with each change; the anonymous HTTPS
// endpoint, fetched with curl as the cron line in docs/KRL.md does, gives
// the same bytes as `tunnel admin krl`.
func TestKRL(t *testing.T) {
	keygen := testenv.LookPath(t, "ssh-keygen")
	curl := testenv.LookPath(t, "curl")
	e := newSSHEnv(t)
	carol := addUser(t, e.admin, "carol", "ops")
	carol.login()
	sessKey, sessCert, sessID := createSessionCert(t, e, e.bob)

	dir := t.TempDir()
	krl := filepath.Join(dir, "revoked_keys")
	e.admin.must("admin", "krl", "--out", krl)
	v0 := krlVersion(t, krl)

	userCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(e.admin.must("ca", "--type", "ssh-user")))
	if err != nil {
		t.Fatal(err)
	}
	sshd := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{userCA}, ExtraConfig: []string{"RevokedKeys " + krl}})
	type identity struct{ name, key, cert string }
	bobLogin := identity{"bob's login certificate", filepath.Join(e.bob.home, "key"), filepath.Join(e.bob.home, "key-cert.pub")}
	carolLogin := identity{"carol's login certificate", filepath.Join(carol.home, "key"), filepath.Join(carol.home, "key-cert.pub")}
	bobSession := identity{"bob's session certificate", sessKey, sessCert}
	sshOK := func(id identity) error {
		out, err := exec.Command("ssh", append(sshd.SSHArgs(id.key, id.cert), e.login+"@127.0.0.1", "echo", "krl-ok")...).CombinedOutput()
		if err == nil && !strings.Contains(string(out), "krl-ok") {
			err = errors.New("no output")
		}
		if err != nil {
			return errors.New(err.Error() + ": " + string(out))
		}
		return nil
	}
	check := func(step string, revoked map[identity]bool) {
		t.Helper()
		for id, want := range revoked {
			if got := keygenRevoked(t, keygen, krl, id.cert); got != want {
				t.Errorf("%s: ssh-keygen -Q says %s revoked: %v; want %v", step, id.name, got, want)
			}
			err := sshOK(id)
			switch {
			case want && err == nil:
				t.Errorf("%s: sshd accepted %s, which the KRL revokes", step, id.name)
			case !want && err != nil:
				t.Errorf("%s: sshd refused %s: %v", step, id.name, err)
			}
		}
	}
	check("before any revocation", map[identity]bool{bobLogin: false, carolLogin: false, bobSession: false})

	// sessions revoke: the session's certificate, and only it.
	e.admin.must("admin", "sessions", "revoke", sessID)
	fetchUntilRevoked(t, e.admin, krl, keygen, sessCert)
	check("after sessions revoke", map[identity]bool{bobLogin: false, carolLogin: false, bobSession: true})
	if !strings.Contains(sshd.Log(), "revoked by file "+krl) {
		t.Errorf("the sshd log does not say the key was revoked by %s:\n%s", krl, sshd.Log())
	}
	v1 := krlVersion(t, krl)
	if v1 <= v0 {
		t.Errorf("KRL version %d after sessions revoke; want more than %d", v1, v0)
	}

	// users lock: every certificate of bob.
	e.admin.must("admin", "users", "lock", "bob")
	fetchUntilRevoked(t, e.admin, krl, keygen, bobLogin.cert)
	check("after users lock", map[identity]bool{bobLogin: true, carolLogin: false, bobSession: true})
	if v2 := krlVersion(t, krl); v2 <= v1 {
		t.Errorf("KRL version %d after users lock; want more than %d", v2, v1)
	}

	// The HTTPS endpoint, anonymously, as the cron line fetches it.
	viaCurl := filepath.Join(dir, "curl_krl")
	caPEM := filepath.Join(dir, "tunnel-ca.pem")
	if err := os.WriteFile(caPEM, []byte(e.admin.must("ca", "--type", "x509")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(curl, "-fsS", "--cacert", caPEM, "-o", viaCurl, "https://"+e.c.addr+api.PathKRL).CombinedOutput(); err != nil {
		t.Fatalf("curl the KRL endpoint: %v\n%s", err, out)
	}
	a, _ := os.ReadFile(krl)
	b, _ := os.ReadFile(viaCurl)
	if len(a) == 0 || string(a) != string(b) {
		t.Errorf("curl got %d bytes, tunnel admin krl %d; want the same KRL", len(b), len(a))
	}
	if !keygenRevoked(t, keygen, viaCurl, bobLogin.cert) || keygenRevoked(t, keygen, viaCurl, carolLogin.cert) {
		t.Errorf("the KRL fetched with curl does not revoke bob and only bob")
	}
	// The KRL names no user.
	if strings.Contains(string(b), "bob") {
		t.Errorf("the KRL contains a user name")
	}
}

// createSessionCert asks the gateway, as u, for a bastion session on
// web-1 for a key made here, and returns the key and certificate files and
// the session id.
func createSessionCert(t *testing.T, e *sshEnv, u *user) (keyFile, certFile, id string) {
	t.Helper()
	cert, err := profile.Dir{Path: u.home}.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := apiclient.New(apiclient.Config{Gateway: e.c.addr, Pin: e.c.pin, Cert: &cert})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	var grant api.SessionGrant
	req := api.CreateSessionRequest{Node: "web-1", Login: e.login, SSHPublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))}
	if err := cl.Do(context.Background(), http.MethodPost, api.PathSessions, nil, req, &grant); err != nil {
		t.Fatalf("create a session: %v", err)
	}
	sc, _, _, _, err := ssh.ParseAuthorizedKey([]byte(grant.SSHCertificate))
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile = sshdtest.WriteIdentity(t, priv, sc.(*ssh.Certificate))
	return keyFile, certFile, grant.Session.ID
}

// keygenRevoked runs `ssh-keygen -Q -f krl cert`: exit 1 and "REVOKED"
// means revoked, exit 0 and "ok" not; anything else fails the test.
func keygenRevoked(t *testing.T, keygen, krl, cert string) bool {
	t.Helper()
	out, err := exec.Command(keygen, "-Q", "-f", krl, cert).CombinedOutput()
	line := strings.TrimSpace(string(out))
	var ee *exec.ExitError
	switch {
	case err == nil && strings.HasSuffix(line, ": ok"):
		return false
	case errors.As(err, &ee) && ee.ExitCode() == 1 && strings.HasSuffix(line, ": REVOKED"):
		return true
	}
	t.Fatalf("ssh-keygen -Q -f %s %s: %v\n%s", krl, cert, err, out)
	return false
}

// fetchUntilRevoked runs `tunnel admin krl --out krl` until the KRL
// revokes cert (the gateway caches its answer for two seconds).
func fetchUntilRevoked(t *testing.T, admin *user, krl, keygen, cert string) {
	t.Helper()
	waitFor(t, 30*time.Second, "the KRL to revoke "+filepath.Base(cert), func() bool {
		admin.must("admin", "krl", "--out", krl)
		return keygenRevoked(t, keygen, krl, cert)
	})
}

func krlVersion(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sshkrl.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k.Version
}
