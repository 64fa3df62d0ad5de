package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/integration/internal/vaulttest"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
)

// TestVaultKeyBackend: a cluster created with --vault-addr keeps its keys
// in the real Vault: no KEK file, the CA keys sign there (logins, agent
// enrolment and a stream over mTLS work, and the user's SSH certificate
// names the Vault key's fingerprint as its CA), the store's TOTP secrets
// are sealed there. With Vault sealed, a login is refused with Vault's
// sentence while a live stream goes on; unsealed, logins work again
// without touching the gateway.
func TestVaultKeyBackend(t *testing.T) {
	v := vaulttest.Start(t)
	c := initVaultCluster(t, v, "vaulted")
	// Without Vault, the gateway says where the keys are.
	out, err := exec.Command(bin("tunnel-gateway"), "run", "--data-dir", c.dataDir, "--api-addr", "127.0.0.1:0").CombinedOutput()
	if want := "this cluster keeps its keys in Vault: give --vault-addr"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("run without --vault-addr: %v\n%s\nwant %q", err, out, want)
	}
	c.start(append(vaultRunArgs(t, v), "--login-burst", "1000")...)
	admin := c.adminUser()
	admin.login()
	// The SSH certificate's CA is the Vault key.
	keys, err := v.Client(t).Logical().Read("transit/keys/tunnel-vaulted-ssh-user-ca")
	if err != nil || keys == nil {
		t.Fatalf("read the Vault key: %v", err)
	}
	certInfo, err := exec.Command("ssh-keygen", "-L", "-f", filepath.Join(admin.home, "key-cert.pub")).CombinedOutput()
	if err != nil || !strings.Contains(string(certInfo), "Signing CA: ED25519") {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, certInfo)
	}
	caPub := admin.must("ca", "--type", "ssh-user")
	fp, err := exec.Command("ssh-keygen", "-l", "-f", writeSecret(t, caPub)).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -l: %v\n%s", err, fp)
	}
	if f := strings.Fields(string(fp)); len(f) < 2 || !strings.Contains(string(certInfo), f[1]) {
		t.Errorf("the SSH certificate's CA is not the cluster's user CA:\n%s\n%s", certInfo, fp)
	}

	// Each certificate's audit event names the Vault key and version.
	signers := certSigners(t, admin)
	for _, want := range []string{"vault key tunnel-vaulted-x509-ca version 1", "vault key tunnel-vaulted-ssh-user-ca version 1"} {
		if !signers[want] {
			t.Errorf("no cert.issued event names %q: %v", want, signers)
		}
	}

	echo := serve(t, echoHandler)
	c.startAgent("db-1", admin.token("db-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	c.startAgent("app-1", admin.token("app-1"), "listen:\n  - {name: echo, address: "+addr+", target: db-1/echo}\n")
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	dialRetry(t, addr, echoOnce, 60*time.Second)
	live := dialEcho(t, addr)
	defer live.Close()

	if err := v.Client(t).Sys().Seal(); err != nil {
		t.Fatalf("seal Vault: %v", err)
	}
	_, stderr, err := admin.run("login", "--password-file", admin.pwPath, "--otp", admin.otp.next(t))
	if want := "is sealed"; err == nil || !strings.Contains(stderr, want) {
		t.Errorf("login with Vault sealed: %v, %q; want a refusal saying Vault %s", err, stderr, want)
	}
	if err := echoOnce(live); err != nil {
		t.Errorf("a live stream died when Vault was sealed: %v", err)
	}
	v.Unseal(t)
	waitFor(t, 60*time.Second, "a login once Vault is unsealed", func() bool {
		_, _, err := admin.run("login", "--password-file", admin.pwPath, "--otp", admin.otp.next(t))
		return err == nil
	})
}

// certSigners returns the signers the cert.issued audit events name
// ("vault key NAME version N", "local key").
func certSigners(t testing.TB, admin *user) map[string]bool {
	t.Helper()
	var evs []struct {
		Type    string            `json:"type"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	signers := map[string]bool{}
	for _, ev := range evs {
		if ev.Type == "cert.issued" {
			signers[ev.Details["signer"]] = true
		}
	}
	return signers
}

// initVaultCluster runs tunnel-gateway init --vault-addr for a cluster
// named name whose keys live in v, and checks that no KEK file was
// written; start it with c.start(vaultRunArgs(t, v)...).
func initVaultCluster(t testing.TB, v *vaulttest.Server, name string) *cluster {
	t.Helper()
	c := &cluster{t: t, dataDir: filepath.Join(t.TempDir(), "data"), name: name, admin: "alice", adminPW: "correct horse battery staple"}
	pwFile := writeSecret(t, c.adminPW)
	out, err := exec.Command(bin("tunnel-gateway"), append([]string{"init", "--data-dir", c.dataDir, "--cluster", c.name,
		"--admin", c.admin, "--admin-password-file", pwFile, "--json"}, vaultRunArgs(t, v)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("init --vault-addr: %v\n%s", err, out)
	}
	c.pin, c.adminOTP = initResult(t, out)
	if _, err := os.Stat(filepath.Join(c.dataDir, "kek")); err == nil {
		t.Errorf("init with Vault wrote a KEK file")
	}
	return c
}

// vaultRunArgs are the gateway flags that reach v with its root token.
func vaultRunArgs(t testing.TB, v *vaulttest.Server) []string {
	return []string{"--vault-addr", v.Addr, "--vault-token-file", writeSecret(t, v.Token)}
}

// initResult reads what tunnel-gateway init --json printed: the CA pin and
// the first admin's TOTP.
func initResult(t testing.TB, out []byte) (string, *otpSource) {
	t.Helper()
	var res struct {
		Pin   string `json:"ca_pin"`
		Admin struct {
			Secret string `json:"secret"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Pin == "" {
		t.Fatalf("init --json: %v\n%s", err, out)
	}
	return res.Pin, newOTPSource(res.Admin.Secret)
}

// certBackend starts a gateway whose CA keys are local (a KEK file) or in
// a real dev Vault, and says how its audit events name the SSH user CA's
// key.
type certBackend struct {
	name  string
	start func(t testing.TB, extra ...string) *cluster
	// signer is the cert.issued events' "signer" for kind ("ssh-user",
	// "x509") of cluster c.
	signer func(c *cluster, kind string) string
}

var certBackends = []certBackend{
	{name: "local",
		start:  func(t testing.TB, extra ...string) *cluster { return startCluster(t, extra...) },
		signer: func(*cluster, string) string { return "local key" }},
	{name: "vault",
		start: func(t testing.TB, extra ...string) *cluster {
			v := vaulttest.Start(t)
			c := initVaultCluster(t, v, "vaulted")
			c.start(append(vaultRunArgs(t, v), extra...)...)
			return c
		},
		signer: func(c *cluster, kind string) string {
			return "vault key tunnel-" + c.name + "-" + kind + "-ca version 1"
		}},
}

// TestCertificateBackends: the certificates a real gateway issues at login
// are the same with the CA keys in the process and in Vault: the SSH
// certificate lists exactly the role's login (a role without logins gets
// no SSH certificate: never empty principals, which OpenSSH reads as
// "anyone"), its lifetime is the requested TTL and a TTL above the role's
// maximum is refused, it carries the permit-* extensions and the key id
// "user=NAME serial=HEX", ssh-keygen -L verifies and lists it under the
// cluster's user CA, a real sshd trusting that CA accepts it, openssl
// verifies the X.509 client certificate against the cluster CA, and each
// cert.issued audit event names the key that signed it ("local key", or
// the Vault key and its version).
func TestCertificateBackends(t *testing.T) {
	keygen := testenv.LookPath(t, "ssh-keygen")
	openssl := testenv.LookPath(t, "openssl")
	for _, b := range certBackends {
		t.Run(b.name, func(t *testing.T) {
			c := b.start(t, "--login-burst", "1000")
			admin := c.adminUser()
			admin.login()
			osUser := testenv.CurrentUser(t)
			admin.must("admin", "roles", "add", "ops", "--login", osUser, "--max-ttl", "2h")
			admin.must("admin", "roles", "add", "viewer")
			bob := addUser(t, admin, "bob", "ops")
			if msg := bob.fails("login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "bob",
				"--password-file", bob.pwPath, "--otp", bob.otp.next(t), "--ttl", "3h"); !strings.Contains(msg, "exceeds your maximum of 2h0m0s") {
				t.Errorf("login --ttl 3h with a 2h role: %q; want \"exceeds your maximum of 2h0m0s\"", msg)
			}
			bob.login("--ttl", "90m")
			certFile := filepath.Join(bob.home, "key-cert.pub")

			// ssh-keygen -L: it verifies the CA's signature as it parses.
			cmd := exec.Command(keygen, "-L", "-f", certFile)
			cmd.Env = append(os.Environ(), "TZ=UTC")
			listing, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("ssh-keygen -L: %v\n%s", err, listing)
			}
			caFile := writeSecret(t, admin.must("ca", "--type", "ssh-user"))
			fp, err := exec.Command(keygen, "-l", "-f", caFile).CombinedOutput()
			if err != nil || len(strings.Fields(string(fp))) < 2 {
				t.Fatalf("ssh-keygen -l of the user CA: %v\n%s", err, fp)
			}
			cert := readSSHCert(t, certFile)
			for _, want := range []string{
				"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
				"Signing CA: ED25519 " + strings.Fields(string(fp))[1] + " (using ssh-ed25519)",
				fmt.Sprintf("Key ID: \"user=bob serial=%x\"", cert.Serial),
				"Principals: \n                " + osUser + "\n        Critical Options:",
				"permit-pty",
			} {
				if !strings.Contains(string(listing), want) {
					t.Errorf("ssh-keygen -L does not show %q:\n%s", want, listing)
				}
			}
			if life := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; life != 91*time.Minute {
				t.Errorf("certificate valid for %s; want the 90m asked for plus the 1m backdating", life)
			}

			// A role without logins: no SSH certificate at all.
			carol := addUser(t, admin, "carol", "viewer")
			carol.login()
			if _, err := os.Stat(filepath.Join(carol.home, "key-cert.pub")); err == nil {
				t.Errorf("a user whose roles grant no login got an SSH certificate")
			}

			// A real sshd trusting the cluster's user CA accepts it.
			caKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(admin.must("ca", "--type", "ssh-user")))
			if err != nil {
				t.Fatal(err)
			}
			sshd := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{caKey}})
			out, err := exec.Command("ssh", append(sshd.SSHArgs(filepath.Join(bob.home, "key"), certFile), osUser+"@127.0.0.1", "echo", "hello-"+b.name)...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "hello-"+b.name) {
				t.Errorf("sshd refused the certificate: %v\n%s\nsshd log:\n%s", err, out, sshd.Log())
			}

			// openssl verifies the X.509 client certificate.
			x509CA := writeSecret(t, admin.must("ca", "--type", "x509"))
			tlsCrt := filepath.Join(bob.home, "tls.crt")
			out, err = exec.Command(openssl, "verify", "-purpose", "sslclient", "-CAfile", x509CA, tlsCrt).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != tlsCrt+": OK" {
				t.Errorf("openssl verify of the client certificate: %v\n%s", err, out)
			}
			if out, err := exec.Command(openssl, "verify", "-purpose", "sslserver", "-CAfile", x509CA, tlsCrt).CombinedOutput(); err == nil {
				t.Errorf("openssl verified the client certificate for a server:\n%s", out)
			}

			// Each cert.issued event names the key that signed it.
			var evs []struct {
				Type    string            `json:"type"`
				Actor   string            `json:"actor"`
				Subject string            `json:"subject"`
				Details map[string]string `json:"details"`
			}
			if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
				t.Fatal(err)
			}
			signers := map[string]bool{}
			n := 0
			for _, ev := range evs {
				if ev.Type != "cert.issued" {
					continue
				}
				n++
				if ev.Details["signer"] == "" {
					t.Errorf("a cert.issued event names no signer: %+v", ev)
				}
				signers[ev.Details["signer"]] = true
			}
			for _, kind := range []string{"ssh-user", "x509"} {
				if want := b.signer(c, kind); !signers[want] {
					t.Errorf("no cert.issued event names %q (%d events: %v)", want, n, signers)
				}
			}
		})
	}
}

func readSSHCert(t *testing.T, path string) *ssh.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := k.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s holds no certificate", path)
	}
	return c
}

// BenchmarkLoginBackends is BenchmarkLoginHTTPS (a whole login against the
// real gateway binary: TLS, argon2id, TOTP, two certificates, store and
// audit writes) with the CA keys local and in a real dev Vault on
// loopback, in the same run. Reports p50 and p99 latency. Run it with
//
//	CI=1 go test -run XXX -bench LoginBackends -benchtime 200x ./integration/
func BenchmarkLoginBackends(b *testing.B) {
	for _, be := range certBackends {
		b.Run(be.name, func(b *testing.B) {
			c := be.start(b, "--login-burst", "100000", "--login-rate", "100000", "--log-level", "info")
			admin := adminClient(b, c)
			defer admin.Close()
			ctx := context.Background()
			// A role with a login, so that each login signs an SSH
			// certificate as well as the X.509 one.
			if err := admin.Do(ctx, http.MethodPost, api.PathRoles, nil, api.Role{Name: "bench", Logins: []string{"bench"}}, nil); err != nil {
				b.Fatalf("create role: %v", err)
			}
			secrets := make([]string, b.N)
			for i := range b.N {
				var enr api.Enrollment
				if err := admin.Do(ctx, http.MethodPost, api.PathUsers, nil,
					api.CreateUserRequest{Name: fmt.Sprintf("bench%d", i), Roles: []string{"bench"}, Password: "benchmark-password"}, &enr); err != nil {
					b.Fatalf("create user: %v", err)
				}
				secrets[i] = enr.Secret
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				cl, err := apiclient.New(apiclient.Config{Gateway: c.addr, Pin: c.pin})
				if err != nil {
					b.Fatal(err)
				}
				key, err := profile.NewKey()
				if err != nil {
					b.Fatal(err)
				}
				name := fmt.Sprintf("bench%d", i)
				csr, _ := key.CSR(name)
				code, _ := totp.GenerateCode(secrets[i], time.Now())
				var resp api.LoginResponse
				err = cl.Do(ctx, http.MethodPost, api.PathLogin, nil, api.LoginRequest{
					User: name, Password: "benchmark-password", OTP: code, CSR: csr,
					SSHPublicKey: strings.TrimSpace(string(sshAuthorizedKey(key))),
				}, &resp)
				cl.Close()
				if err != nil {
					b.Fatalf("login %d: %v", i, err)
				}
				if resp.SSHCertificate == "" {
					b.Fatalf("login %d: no SSH certificate", i)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
		})
	}
}
