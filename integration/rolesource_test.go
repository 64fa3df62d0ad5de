package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
)

// loginVia logs u in through the gateway address addr (a srcProxy, so
// that the gateway sees the proxy's source address) and returns the CLI's
// stdout, stderr and error.
func (u *user) loginVia(addr string) (string, string, error) {
	u.c.t.Helper()
	return u.run("login", "--gateway", addr, "--ca-pin", u.c.pin, "--user", u.name,
		"--password-file", u.pwPath, "--otp", u.otp.next(u.c.t))
}

// TestRoleSources: per-role source networks, with the real binaries and a
// real sshd. Sources are loopback addresses (see network_test.go): the
// gateway listens on 127.0.0.1, and proxies bound to 127.0.0.2 and
// 127.0.0.3 make the CLI's connections (API and QUIC) come from there.
//
//   - bob holds only office (--source 127.0.0.3/32): his login from
//     127.0.0.2 is refused with the sentence naming the source and the
//     role; from 127.0.0.3 it succeeds, and ssh-keygen -L shows the SSH
//     certificate's source-address;
//   - a real sshd trusting the user CA accepts that certificate from
//     127.0.0.3 and refuses it from 127.0.0.2;
//   - tunnel ssh from 127.0.0.3 opens a session; from 127.0.0.2 (bob
//     logged in there through another, unrestricted role) it is refused
//     with the sentence;
//   - narrowing office to 127.0.0.4/32 cuts bob's live session from
//     127.0.0.3 with the reason.
func TestRoleSources(t *testing.T) {
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	osUser := testenv.CurrentUser(t)

	admin.must("admin", "roles", "add", "office", "--login", osUser, "--node", "web-*", "--source", "127.0.0.3")
	var roles []api.Role
	if err := json.Unmarshal([]byte(admin.must("admin", "roles", "ls", "--json")), &roles); err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		if r.Name == "office" && (len(r.Sources) != 1 || r.Sources[0] != "127.0.0.3/32") {
			t.Errorf("roles ls: office sources %v; want [127.0.0.3/32]", r.Sources)
		}
	}
	if se := admin.fails("admin", "roles", "add", "bad", "--source", "office-lan"); !strings.Contains(se, `source "office-lan" is not a network`) {
		t.Errorf("roles add --source office-lan: %q; want a refusal naming it", se)
	}
	bob := addUser(t, admin, "bob", "office")
	from2 := newSrcProxy(t, "127.0.0.2", c.addr)
	from3 := newSrcProxy(t, "127.0.0.3", c.addr)

	// Login: refused from 127.0.0.2, accepted from 127.0.0.3.
	_, se, err := bob.loginVia(from2.addr)
	want := "you connect from 127.0.0.2, and role office applies only from 127.0.0.3/32: connect from one of its networks or ask an admin to add yours (tunnel admin roles update office --source CIDR)"
	if err == nil || !strings.Contains(se, want) {
		t.Fatalf("bob's login from 127.0.0.2: %v, %q; want refused with %q", err, se, want)
	}
	if _, se, err := bob.loginVia(from3.addr); err != nil {
		t.Fatalf("bob's login from 127.0.0.3: %v\n%s", err, se)
	}
	certFile := filepath.Join(bob.home, "key-cert.pub")
	out, err := exec.Command("ssh-keygen", "-L", "-f", certFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "source-address 127.0.0.3/32") {
		t.Errorf("ssh-keygen -L of bob's certificate: %v\n%s\nwant the critical option source-address 127.0.0.3/32", err, out)
	}

	// A stock sshd enforces the certificate's source-address.
	caKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(admin.must("ca", "--type", "ssh-user")))
	if err != nil {
		t.Fatal(err)
	}
	sshd := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{caKey}})
	args := sshd.SSHArgs(filepath.Join(bob.home, "key"), certFile)
	sshFrom := func(src string) ([]byte, error) {
		a := append([]string{"-o", "BindAddress=" + src}, args...)
		return exec.Command("ssh", append(a, osUser+"@127.0.0.1", "echo", "hello-from-sshd")...).CombinedOutput()
	}
	if got, err := sshFrom("127.0.0.3"); err != nil || !strings.Contains(string(got), "hello-from-sshd") {
		t.Errorf("ssh from 127.0.0.3 with bob's certificate: %v\n%s\nsshd log:\n%s", err, got, sshd.Log())
	}
	if got, err := sshFrom("127.0.0.2"); err == nil {
		t.Errorf("ssh from 127.0.0.2 with bob's certificate succeeded:\n%s", got)
	}
	waitFor(t, 10*time.Second, "sshd to log the refused source", func() bool {
		return strings.Contains(sshd.Log(), "not from a permitted source address (127.0.0.2)")
	})

	// Sessions through the gateway.
	c.startAgent("web-1", admin.token("web-1"), "")
	admin.waitOnline("web-1", true, 20*time.Second)
	if code, so, se := bob.exitCode("ssh", osUser+"@web-1", "echo", "hello-from-web-1"); code != 0 || !strings.Contains(so, "hello-from-web-1") {
		t.Fatalf("bob's tunnel ssh from 127.0.0.3: exit %d, %q, %q", code, so, se)
	}
	// bob from 127.0.0.2 through an unrestricted role that allows no SSH
	// to web-1: the login works, the session is refused for the source.
	admin.must("admin", "roles", "add", "basic", "--login", "nobody", "--node", "db-*")
	admin.must("admin", "users", "grant", "bob", "basic")
	bob2 := c.newUserHandle("bob", bob.pw, bob.otp)
	so, se, err := bob2.loginVia(from2.addr)
	if err != nil {
		t.Fatalf("bob's login from 127.0.0.2 with basic: %v\n%s", err, se)
	}
	if !strings.Contains(so+se, "outside the source networks of role office") {
		t.Errorf("bob's login from 127.0.0.2 with basic said %q %q; want a warning that office does not count", so, se)
	}
	if code, _, se := bob2.exitCode("ssh", osUser+"@web-1", "true"); code == 0 || !strings.Contains(se, want) {
		t.Errorf("bob's tunnel ssh from 127.0.0.2: exit %d, %q; want refused with %q", code, se, want)
	}

	// Narrowing the role cuts the live session from 127.0.0.3.
	wait, output := bob.backgroundOut("ssh", osUser+"@web-1", "echo started-remote; sleep 120")
	waitFor(t, 20*time.Second, "the remote command to start", func() bool { return strings.Contains(output(), "started-remote") })
	admin.must("admin", "roles", "update", "office", "--source", "127.0.0.4/32")
	code, got := wait(30 * time.Second)
	wantCut := "you connect from 127.0.0.3, and role office applies only from 127.0.0.4/32"
	if code == 0 || code == -2 || !strings.Contains(got, wantCut) {
		t.Errorf("bob's session after office was narrowed: exit %d, %q; want it cut with %q", code, got, wantCut)
	}
}
