package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/vaulttest"
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
	tokenFile := writeSecret(t, v.Token)
	c := &cluster{t: t, dataDir: filepath.Join(t.TempDir(), "data"), name: "vaulted", admin: "alice", adminPW: "correct horse battery staple"}
	pwFile := writeSecret(t, c.adminPW)
	vaultArgs := []string{"--vault-addr", v.Addr, "--vault-token-file", tokenFile}
	out, err := exec.Command(bin("tunnel-gateway"), append([]string{"init", "--data-dir", c.dataDir, "--cluster", c.name,
		"--admin", c.admin, "--admin-password-file", pwFile, "--json"}, vaultArgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("init --vault-addr: %v\n%s", err, out)
	}
	c.pin, c.adminOTP = initResult(t, out)
	if _, err := os.Stat(filepath.Join(c.dataDir, "kek")); err == nil {
		t.Errorf("init with Vault wrote a KEK file")
	}
	// Without Vault, the gateway says where the keys are.
	out, err = exec.Command(bin("tunnel-gateway"), "run", "--data-dir", c.dataDir, "--api-addr", "127.0.0.1:0").CombinedOutput()
	if want := "this cluster keeps its keys in Vault: give --vault-addr"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("run without --vault-addr: %v\n%s\nwant %q", err, out, want)
	}
	c.start(append(vaultArgs, "--login-burst", "1000")...)
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

// initResult reads what tunnel-gateway init --json printed: the CA pin and
// the first admin's TOTP.
func initResult(t *testing.T, out []byte) (string, *otpSource) {
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
