package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/integration/internal/vaulttest"
)

// TestVaultCARotation rotates the three CAs of a cluster whose keys are in
// the real Vault: start makes a new Transit key per kind (ECDSA P-256 for
// the X.509 CA, Ed25519 for the SSH CAs); after activate, logins are
// signed by the new keys (the audit events name them); after finish and a
// restart, the gateway loads the new keys from Vault by reference, the
// cluster trusts only them, and openssl verifies a new login certificate
// against the new X.509 CA alone.
func TestVaultCARotation(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl")
	v := vaulttest.Start(t)
	c := initVaultCluster(t, v, "vrot")
	args := append(vaultRunArgs(t, v), "--login-burst", "1000")
	c.start(args...)
	admin := c.adminUser()
	admin.login()
	vc := v.Client(t)
	keyType := func(name string) string {
		t.Helper()
		sec, err := vc.Logical().Read("transit/keys/" + name)
		if err != nil || sec == nil {
			t.Fatalf("read the Transit key %s: %v", name, err)
		}
		return fmt.Sprint(sec.Data["type"])
	}
	if got := keyType("tunnel-vrot-x509-ca"); got != "ecdsa-p256" {
		t.Errorf("init made the X.509 CA's Transit key %s; want ecdsa-p256 (browsers refuse Ed25519)", got)
	}
	oldX509, oldUser := admin.must("ca", "--type", "x509"), admin.must("ca", "--type", "ssh-user")

	admin.must("admin", "ca", "rotate", "start")
	list, err := vc.Logical().List("transit/keys")
	if err != nil || list == nil {
		t.Fatalf("list the Transit keys: %v", err)
	}
	keys, _ := list.Data["keys"].([]any)
	newKeys := map[string]string{}
	for _, kind := range []string{"x509", "ssh-user", "ssh-host"} {
		prefix := "tunnel-vrot-" + kind + "-ca-r"
		for _, k := range keys {
			if name := fmt.Sprint(k); strings.HasPrefix(name, prefix) {
				newKeys[kind] = name
			}
		}
		if newKeys[kind] == "" {
			t.Fatalf("rotate start made no Transit key %s*: %v", prefix, keys)
		}
	}
	for kind, want := range map[string]string{"x509": "ecdsa-p256", "ssh-user": "ed25519", "ssh-host": "ed25519"} {
		if got := keyType(newKeys[kind]); got != want {
			t.Errorf("the new %s CA key %s is %s; want %s", kind, newKeys[kind], got, want)
		}
	}

	admin.must("admin", "ca", "rotate", "activate", "--force")
	admin.login()
	signers := certSigners(t, admin)
	for _, kind := range []string{"x509", "ssh-user"} {
		if want := "vault key " + newKeys[kind] + " version 1"; !signers[want] {
			t.Errorf("after activate no cert.issued event names %q: %v", want, signers)
		}
	}

	admin.must("admin", "ca", "rotate", "finish", "--force")
	if err := c.stop(); err != nil {
		t.Logf("gateway stop: %v", err)
	}
	c.start(append([]string{"--api-addr", c.addr}, args...)...)
	admin.login()
	newX509, newUser := admin.must("ca", "--type", "x509"), admin.must("ca", "--type", "ssh-user")
	if newX509 == oldX509 || strings.Count(newX509, "BEGIN CERTIFICATE") != 1 {
		t.Errorf("after finish the cluster trusts these X.509 CAs:\n%s\nwant one, not the old one", newX509)
	}
	if newUser == oldUser || strings.Count(strings.TrimSpace(newUser), "\n") != 0 {
		t.Errorf("after finish the cluster trusts these SSH user CAs:\n%s\nwant one, not the old one", newUser)
	}
	tlsCrt := filepath.Join(admin.home, "tls.crt")
	if out, err := exec.Command(openssl, "verify", "-purpose", "sslclient", "-CAfile", writeSecret(t, newX509), tlsCrt).CombinedOutput(); err != nil {
		t.Errorf("openssl verify of a login certificate against the new X.509 CA: %v\n%s", err, out)
	}
	if out, err := exec.Command(openssl, "verify", "-purpose", "sslclient", "-CAfile", writeSecret(t, oldX509), tlsCrt).CombinedOutput(); err == nil {
		t.Errorf("openssl verified a login certificate after finish against the old X.509 CA:\n%s", out)
	}
}
