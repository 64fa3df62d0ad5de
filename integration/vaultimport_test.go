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

// TestVaultImport: a cluster made with a KEK file moves its keys into the
// real Vault with tunnel-gateway vault import. While the gateway runs the
// import is refused. Once moved, the gateway runs with --vault-addr and no
// KEK file: the CA is the same (the agent and the user, who pinned it
// before, reconnect and log in without being told anything), a user's
// TOTP secret sealed before opens, new certificates are signed by the
// imported Transit keys, and a stream flows. Without --vault-addr the
// gateway says where the keys are; a second import has nothing to move.
func TestVaultImport(t *testing.T) {
	v := vaulttest.Start(t)
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	bob := addUser(t, admin, "bob", "admin")
	bob.login()
	echo := serve(t, echoHandler)
	c.startAgent("db-1", admin.token("db-1"), "expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	c.startAgent("app-1", admin.token("app-1"), "listen:\n  - {name: echo, address: "+addr+", target: db-1/echo}\n")
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/echo")
	dialRetry(t, addr, echoOnce, 60*time.Second)
	caBefore := admin.must("ca", "--type", "ssh-user")

	vaultArgs := vaultRunArgs(t, v)
	importCmd := func(extra ...string) (string, error) {
		out, err := exec.Command(bin("tunnel-gateway"), append(append([]string{"vault", "import", "--data-dir", c.dataDir}, vaultArgs...), extra...)...).CombinedOutput()
		return string(out), err
	}
	// Refused while the gateway runs.
	if out, err := importCmd(); err == nil || !strings.Contains(out, "is running") || !strings.Contains(out, "stop every gateway") {
		t.Fatalf("vault import with the gateway running: %v\n%s", err, out)
	}
	if err := c.stop(); err != nil {
		t.Fatalf("stop the gateway: %v", err)
	}
	out, err := importCmd("--json")
	if err != nil {
		t.Fatalf("vault import: %v\n%s", err, out)
	}
	var res struct {
		KEK      string   `json:"vault_kek"`
		CAKeys   []string `json:"vault_ca_keys"`
		Resealed int      `json:"resealed"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("vault import --json: %v\n%s", err, out)
	}
	// Three CA keys; two TOTP secrets (alice's, bob's).
	if res.KEK != "tunnel-itest-kek" || len(res.CAKeys) != 3 || res.Resealed != 2 {
		t.Fatalf("vault import moved %+v; want the KEK tunnel-itest-kek, 3 CA keys and 2 TOTP secrets", res)
	}
	for _, k := range res.CAKeys {
		s, err := v.Client(t).Logical().Read("transit/keys/" + k)
		if err != nil || s == nil {
			t.Fatalf("Vault has no Transit key %s: %v", k, err)
		}
		if s.Data["exportable"] != false || s.Data["imported_key"] != true {
			t.Errorf("Transit key %s: exportable %v, imported %v; want an imported key that cannot leave Vault", k, s.Data["exportable"], s.Data["imported_key"])
		}
	}
	// The KEK file is no longer needed.
	if err := os.Rename(filepath.Join(c.dataDir, "kek"), filepath.Join(t.TempDir(), "kek.offline")); err != nil {
		t.Fatal(err)
	}
	// Without Vault the gateway says where the keys are.
	runOut, err := exec.Command(bin("tunnel-gateway"), "run", "--data-dir", c.dataDir, "--api-addr", "127.0.0.1:0").CombinedOutput()
	if want := "give --vault-addr"; err == nil || !strings.Contains(string(runOut), want) {
		t.Errorf("run without --vault-addr after the import: %v\n%s\nwant %q", err, runOut, want)
	}
	c.start(append(vaultArgs, "--api-addr", c.addr, "--login-burst", "1000")...)

	// The CA is the same: the user logs in with the pin and TOTP secret of
	// before, and the agents reconnect.
	bob.login()
	if got := bob.must("ca", "--type", "ssh-user"); got != caBefore {
		t.Errorf("the SSH user CA changed in the move:\n%s\nwas\n%s", got, caBefore)
	}
	admin.waitOnline("db-1", true, 60*time.Second)
	admin.waitOnline("app-1", true, 60*time.Second)
	dialRetry(t, addr, echoOnce, 60*time.Second)
	// New certificates are signed in Vault, by the imported keys.
	signers := certSigners(t, admin)
	var x509, sshUser bool
	for s := range signers {
		x509 = x509 || strings.HasPrefix(s, "vault key tunnel-itest-x509-ca-i")
		sshUser = sshUser || strings.HasPrefix(s, "vault key tunnel-itest-ssh-user-ca-i")
	}
	if !x509 || !sshUser {
		t.Errorf("no certificate signed by the imported Transit keys: %v", signers)
	}
	if !strings.Contains(admin.must("admin", "audit", "ls", "--json"), `"kek.moved_to_vault"`) {
		t.Errorf("the move is not in the audit log")
	}
	// Nothing more to move.
	if out, err := importCmd(); err != nil || !strings.Contains(out, "nothing to move") {
		t.Errorf("a second vault import: %v\n%s", err, out)
	}
}
