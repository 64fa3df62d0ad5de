package integration

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// TestOpenSSHJump: stock OpenSSH (ssh, scp, sftp) through the gateway's
// jump host with the certificate from tunnel login.
func TestOpenSSHJump(t *testing.T) {
	for _, tool := range []string{"ssh", "scp", "sftp"} {
		testenv.LookPath(t, tool)
	}
	login := testenv.CurrentUser(t)
	c := startCluster(t, "--login-burst", "1000", "--ssh-addr", "127.0.0.1:0")
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "ops", "--login", login, "--node", "web-*")
	bob := addUser(t, admin, "bob", "ops")
	bob.login()
	c.startAgent("web-1", admin.token("web-1"), "")
	admin.waitOnline("web-1", true, 20*time.Second)

	host, port, _ := strings.Cut(c.sshAddr, ":")
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`Host jump
    HostName %s
    Port %s
    User bob
Host *
    IdentityFile %s
    CertificateFile %s
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile %s
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 10
`, host, port, filepath.Join(bob.home, "key"), filepath.Join(bob.home, "key-cert.pub"), filepath.Join(bob.home, "known_hosts"))), 0o600)
	run := func(name string, args ...string) (int, string) {
		cmd := exec.Command(name, append([]string{"-F", cfg}, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return 0, string(out)
	}

	code, out := run("ssh", "-J", "jump", login+"@web-1", "echo via-jump; exit 5")
	if code != 5 || !strings.Contains(out, "via-jump") {
		t.Fatalf("ssh -J: exit %d, output %q; want 5 and the command's output", code, out)
	}

	// scp both ways, identical bytes.
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := make([]byte, 3<<20)
	rand.Read(data)
	os.WriteFile(src, data, 0o600)
	remote := filepath.Join(dir, "remote.bin") // the node is this machine
	if code, out := run("scp", "-J", "jump", src, login+"@web-1:"+remote); code != 0 {
		t.Fatalf("scp -J upload: exit %d: %s", code, out)
	}
	back := filepath.Join(dir, "back.bin")
	if code, out := run("scp", "-J", "jump", login+"@web-1:"+remote, back); code != 0 {
		t.Fatalf("scp -J download: exit %d: %s", code, out)
	}
	if got, _ := os.ReadFile(back); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Error("scp -J round trip changed the file")
	}

	// sftp both ways.
	batch := filepath.Join(dir, "batch")
	os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s.sftp\nget %s.sftp %s.back\n", src, remote, remote, back)), 0o600)
	if code, out := run("sftp", "-J", "jump", "-b", batch, login+"@web-1"); code != 0 {
		t.Fatalf("sftp -J: exit %d: %s", code, out)
	}
	if got, _ := os.ReadFile(back + ".back"); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Error("sftp -J round trip changed the file")
	}

	// Refusals: a login the certificate does not carry; a node no role covers.
	if code, out := run("ssh", "-J", "jump", "not-"+login+"@web-1", "true"); code == 0 {
		t.Errorf("ssh -J with a login not in the certificate succeeded: %s", out)
	}
	if code, out := run("ssh", "-J", "jump", login+"@db-1", "true"); code == 0 || !strings.Contains(out, "do not allow db-1") {
		t.Errorf("ssh -J to a node not in the role: exit %d, %q; want the jump host to refuse it", code, out)
	}

	// tunnel config ssh writes what makes `ssh NODE.CLUSTER` just work.
	block := bob.must("config", "ssh", "--ssh-port", port)
	cfg2 := filepath.Join(t.TempDir(), "ssh_config_tunnel")
	os.WriteFile(cfg2, []byte(block+"Host *\n    BatchMode yes\n    GlobalKnownHostsFile /dev/null\n    IdentityAgent none\n"), 0o600)
	if out, err := exec.Command("ssh", "-F", cfg2, login+"@web-1."+c.name, "echo via-config").CombinedOutput(); err != nil || !strings.Contains(string(out), "via-config") {
		t.Errorf("ssh with the block from tunnel config ssh: %v\n%s\nblock:\n%s", err, out, block)
	}

	// Port forwarding is off unless a role allows it.
	echo := serve(t, echoHandler)
	fwd := func(cfgFile string) (string, error) {
		cmd := exec.Command("ssh", "-F", cfgFile, "-J", "jump", "-W", echo.addr(), login+"@web-1")
		cmd.Stdin = strings.NewReader("forwarded\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := fwd(cfg); err == nil && strings.Contains(out, "forwarded") {
		t.Errorf("ssh -W worked for a role without --allow-port-forwarding: %s", out)
	}
	admin.must("admin", "roles", "add", "tunnels", "--login", login, "--node", "web-*", "--allow-port-forwarding")
	carol := addUser(t, admin, "carol", "tunnels")
	carol.login()
	cfgCarol := filepath.Join(t.TempDir(), "ssh_config_carol")
	os.WriteFile(cfgCarol, []byte(strings.NewReplacer(bob.home, carol.home, "User bob", "User carol").Replace(mustRead(t, cfg))), 0o600)
	if out, err := fwd(cfgCarol); err != nil || !strings.Contains(out, "forwarded") {
		t.Errorf("ssh -W for a role with --allow-port-forwarding: %v, %q; want the echo", err, out)
	}

	// The jump sessions are listed like any other.
	ls := admin.must("admin", "sessions", "ls")
	if !strings.Contains(ls, "bob") || !strings.Contains(ls, "web-1") {
		t.Errorf("sessions ls lacks bob's jump sessions:\n%s", ls)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
