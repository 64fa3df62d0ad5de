package certs

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// The certificates of both backends as OpenSSH's and OpenSSL's own tools
// read them. (A real sshd accepting them: integration's
// TestCertificateBackends, with certificates the gateway issued.)

// keygenList runs `ssh-keygen -L` on cert in UTC. ssh-keygen verifies the
// CA's signature while parsing, so a certificate it lists is signed right.
func keygenList(t *testing.T, cert *ssh.Certificate) string {
	t.Helper()
	keygen := testenv.LookPath(t, "ssh-keygen")
	path := filepath.Join(t.TempDir(), "id-cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(keygen, "-L", "-f", path)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	return string(out)
}

// listing is what ssh-keygen -L shows, in its layout: the fields one per
// line, then the principals, critical options and extensions indented.
func listing(kind string, ca ssh.PublicKey, keyID string, serial uint64, from, to time.Time, principals, options, extensions []string) []string {
	section := func(name string, items []string) string {
		if len(items) == 0 {
			return name + ": (none)"
		}
		return name + ": \n                " + strings.Join(items, "\n                ")
	}
	return []string{
		"Type: ssh-ed25519-cert-v01@openssh.com " + kind + " certificate",
		"Signing CA: ED25519 " + ssh.FingerprintSHA256(ca) + " (using ssh-ed25519)",
		fmt.Sprintf("Key ID: %q", keyID),
		fmt.Sprintf("Serial: %d", serial),
		"Valid: from " + from.UTC().Format("2006-01-02T15:04:05") + " to " + to.UTC().Format("2006-01-02T15:04:05"),
		section("Principals", principals),
		section("Critical Options", options),
		section("Extensions", extensions),
	}
}

// TestSSHKeygenList: ssh-keygen verifies and lists the user and host
// certificates of both backends with the CA, key id, serial, validity
// (the TTL, backdated by ClockSkew), principals, source-address and
// extensions the request asked for.
func TestSSHKeygenList(t *testing.T) { forEachBackend(t, testSSHKeygenList) }

func testSSHKeygenList(t *testing.T, b backend) {
	a := b.authority(t)
	pub, _ := newEd25519(t)
	key := newSSHKey(t, pub)
	user, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice", "root"}, PublicKey: key,
		TTL: 2 * time.Hour, MaxTTL: 4 * time.Hour, SourceAddresses: []string{"10.0.0.0/8"}, SessionID: "s-1"})
	if err != nil {
		t.Fatal(err)
	}
	host, err := a.IssueSSHHost(SSHHostRequest{Host: "db1", Principals: []string{"db1", "db1.example.com"}, PublicKey: key, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	from := testNow.Add(-ClockSkew)
	for _, tt := range []struct {
		name string
		got  string
		want []string
	}{
		{"user", keygenList(t, user), listing("user", a.SSHUserCA(), fmt.Sprintf("user=alice serial=%x session=s-1", user.Serial), user.Serial,
			from, testNow.Add(2*time.Hour), []string{"alice", "root"}, []string{"source-address 10.0.0.0/8"},
			[]string{"permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"})},
		{"host", keygenList(t, host), listing("host", a.SSHHostCA(), fmt.Sprintf("host=db1 serial=%x", host.Serial), host.Serial,
			from, testNow.Add(24*time.Hour), []string{"db1", "db1.example.com"}, nil, nil)},
	} {
		for _, line := range tt.want {
			if !strings.Contains(tt.got, line) {
				t.Errorf("%s certificate: ssh-keygen -L does not show\n%s\nin:\n%s", tt.name, line, tt.got)
			}
		}
	}
	// A tampered certificate is refused by ssh-keygen: it checks the
	// signature, so the listing above proves the CA signed them.
	bad := *user
	bad.ValidPrincipals = []string{"root"}
	keygen := testenv.LookPath(t, "ssh-keygen")
	path := filepath.Join(t.TempDir(), "bad-cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(&bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(keygen, "-L", "-f", path).CombinedOutput(); err == nil {
		t.Errorf("ssh-keygen -L accepted a certificate whose principals were changed after signing:\n%s", out)
	}
}

// opensslVerify runs `openssl verify` of leaf against ca at testNow for
// purpose and returns its output and whether it said OK.
func opensslVerify(t *testing.T, ca, leaf *x509.Certificate, purpose string) (string, bool) {
	t.Helper()
	openssl := testenv.LookPath(t, "openssl")
	dir := t.TempDir()
	write := func(name string, c *x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile, leafFile := write("ca.pem", ca), write("leaf.pem", leaf)
	out, err := exec.Command(openssl, "verify", "-attime", fmt.Sprint(testNow.Unix()), "-purpose", purpose,
		"-CAfile", caFile, leafFile).CombinedOutput()
	return string(out), err == nil && strings.TrimSpace(string(out)) == leafFile+": OK"
}

// TestOpenSSLVerify: openssl verifies the X.509 client and server
// certificates of both backends against their CA, for their purpose only,
// and not against another CA.
func TestOpenSSLVerify(t *testing.T) { forEachBackend(t, testOpenSSLVerify) }

func testOpenSSLVerify(t *testing.T, b backend) {
	a := b.authority(t)
	other := localBackend.authority(t)
	pub, _ := newEd25519(t)
	client, err := a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	server, err := a.IssueX509Server(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gw-1"}, PublicKey: pub,
		DNSNames: []string{"gw.example.com"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		ca      *x509.Certificate
		leaf    *x509.Certificate
		purpose string
		ok      bool
	}{
		{"client for sslclient", a.X509CA(), client, "sslclient", true},
		{"server for sslserver", a.X509CA(), server, "sslserver", true},
		{"the CA itself", a.X509CA(), a.X509CA(), "any", true},
		{"client for sslserver", a.X509CA(), client, "sslserver", false},
		{"client under another CA", other.X509CA(), client, "sslclient", false},
	} {
		out, ok := opensslVerify(t, tt.ca, tt.leaf, tt.purpose)
		if ok != tt.ok {
			t.Errorf("%s: openssl verify OK = %v; want %v:\n%s", tt.name, ok, tt.ok, out)
		}
	}
}

// TestSignerNamed: Authority.Signer, which every cert.issued audit event
// records, names the Vault key and version for the Vault backend and says
// "local key" otherwise.
func TestSignerNamed(t *testing.T) { forEachBackend(t, testSignerNamed) }

func testSignerNamed(t *testing.T, b backend) {
	a := b.authority(t)
	want := regexp.MustCompile(`^local key$`)
	if b.vault != nil {
		want = regexp.MustCompile(`^vault key test-\d+-(x509|ssh-user|ssh-host)-ca version 1$`)
	}
	seen := map[string]bool{}
	for _, kind := range []store.CertKind{store.CertX509, store.CertSSHUser, store.CertSSHHost} {
		got := a.Signer(kind)
		if !want.MatchString(got) || b.vault != nil && !strings.Contains(got, "-"+string(kind)+"-ca ") {
			t.Errorf("Signer(%s) = %q; want %v naming that kind's key", kind, got, want)
		}
		seen[got] = true
	}
	if b.vault != nil && len(seen) != 3 {
		t.Errorf("the three CA kinds share a Vault key: %v", seen)
	}
}
