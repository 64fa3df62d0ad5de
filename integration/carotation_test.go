package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
)

// TestCARotation rotates the three CAs of a real gateway (start, activate,
// finish) while an SSH session (tunnel ssh), a tunnel stream between two
// agents and the agents' renewals (one-minute certificates) run: nothing
// drops; once activated, new certificates are signed by the new CAs
// (ssh-keygen -L names the new user CA, openssl verifies the login
// certificate against the new X.509 CA only); after finish, a client still
// holding a login of the old CA is refused with a clear message and an
// agent that still has a certificate of the old CA cannot connect.
func TestCARotation(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for several agent renewals (about a minute)")
	}
	keygen := testenv.LookPath(t, "ssh-keygen")
	openssl := testenv.LookPath(t, "openssl")
	e := newSSHEnvWith(t, "--agent-ttl", "1m")
	admin, bob := e.admin, e.bob

	// The tunnel stream: app-1 listens, web-1 serves echo.
	local := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := e.c.startAgent("app-1", admin.token("app-1"), fmt.Sprintf("listen:\n  - {name: echo, address: %s, target: web-1/echo}\n", local))
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/echo")
	dialRetry(t, local, echoOnce, 20*time.Second)
	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	round := 0
	streamAlive := func(when string) {
		t.Helper()
		round++
		msg := fmt.Sprintf("%s %d\n", when, round)
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatalf("%s: the tunnel stream broke: %v", when, err)
		}
		if got, err := rd.ReadString('\n'); err != nil || got != msg {
			t.Fatalf("%s: the tunnel stream broke: %q, %v", when, got, err)
		}
	}

	// The SSH session: prints a tick every second until killed.
	_, sshOut := bob.backgroundOut("ssh", e.login+"@web-1", "echo started-remote; while sleep 1; do echo tick; done")
	waitFor(t, 20*time.Second, "the SSH session to start", func() bool { return strings.Contains(sshOut(), "started-remote") })
	sshAlive := func(when string) {
		t.Helper()
		n := strings.Count(sshOut(), "tick")
		waitFor(t, 20*time.Second, when+": the SSH session to keep running", func() bool { return strings.Count(sshOut(), "tick") > n+1 })
	}
	renewals := func(a *agentProc) int { return strings.Count(a.log.String(), "certificate renewed") }
	waitRenewed := func(when string, agents ...*agentProc) {
		t.Helper()
		for _, a := range agents {
			n := renewals(a)
			waitFor(t, 90*time.Second, when+": agent "+a.name+" to renew its certificate", func() bool { return renewals(a) > n })
		}
	}
	status := func() api.CARotationStatus {
		t.Helper()
		var st api.CARotationStatus
		if err := json.Unmarshal([]byte(admin.must("admin", "ca", "rotate", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// start: the new keys are trusted, the old ones sign.
	out := admin.must("admin", "ca", "rotate", "start")
	for _, k := range []string{"x509", "ssh-user", "ssh-host"} {
		if !strings.Contains(out, k+": started: new key") {
			t.Fatalf("rotate start printed:\n%s\nwant every kind started", out)
		}
	}
	if out := admin.must("admin", "ca", "rotate", "start"); !strings.Contains(out, "x509: already started") {
		t.Fatalf("a second start printed:\n%s\nwant already started", out)
	}
	st := status()
	newFP := map[string]string{}
	var newCAPEM string
	for _, k := range st.Kinds {
		if k.Phase != "started" || k.New == nil {
			t.Fatalf("after start %s is %q; want started with a new key", k.Kind, k.Phase)
		}
		newFP[k.Kind] = k.New.Fingerprint
		if k.Kind == "x509" {
			newCAPEM = k.New.Public
		}
	}
	if users := strings.Fields(admin.must("ca", "--type", "ssh-user")); len(users) != 4 { // two "ssh-ed25519 KEY" lines
		t.Fatalf("the published user CA bundle has %d fields; want two keys", len(users))
	}
	waitRenewed("after start", e.web, app) // they now hold the new bundle
	streamAlive("after start")

	// activate: refused while logins of before the start are valid...
	se := admin.fails("admin", "ca", "rotate", "activate")
	if !strings.Contains(se, "issued before the start are still valid until") || !strings.Contains(se, "--force") {
		t.Fatalf("activate before every holder has the bundle: %s; want a refusal with the date and --force", se)
	}
	// ...forced, right after web-1 renewed: keep its certificate of the
	// old CA (valid for a minute) for the end.
	waitRenewed("before activate", e.web)
	admin.must("admin", "ca", "rotate", "activate", "--force")
	oldAgentDir := filepath.Join(t.TempDir(), "web-1-old")
	if out, err := exec.Command("cp", "-a", e.web.dataDir, oldAgentDir).CombinedOutput(); err != nil {
		t.Fatalf("copy web-1's data: %v\n%s", err, out)
	}
	bobOld := &user{c: e.c, name: bob.name, pw: bob.pw, otp: bob.otp, home: filepath.Join(t.TempDir(), "bob-old"), pwPath: bob.pwPath}
	if out, err := exec.Command("cp", "-a", bob.home, bobOld.home).CombinedOutput(); err != nil {
		t.Fatalf("copy bob's login: %v\n%s", err, out)
	}
	streamAlive("after activate")
	sshAlive("after activate")

	// New logins are signed by the new CAs.
	bob.login()
	admin.login()
	certOut, err := exec.Command(keygen, "-L", "-f", filepath.Join(bob.home, "key-cert.pub")).CombinedOutput()
	if err != nil || !strings.Contains(string(certOut), newFP["ssh-user"]) {
		t.Fatalf("ssh-keygen -L of bob's new certificate (%v):\n%s\nwant the new user CA %s", err, certOut, newFP["ssh-user"])
	}
	newCA := filepath.Join(t.TempDir(), "new-ca.pem")
	if err := os.WriteFile(newCA, []byte(newCAPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(openssl, "verify", "-CAfile", newCA, filepath.Join(bob.home, "tls.crt")).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify of bob's new login certificate against the new CA: %v\n%s", err, out)
	}
	if out, err := exec.Command(openssl, "verify", "-CAfile", newCA, filepath.Join(bobOld.home, "tls.crt")).CombinedOutput(); err == nil {
		t.Fatalf("openssl verify of bob's old login certificate against the new CA succeeded:\n%s", out)
	}
	// web-1 renewed after the start: its SSH endpoint trusts the new user CA.
	if code, so, se := bob.exitCode("ssh", e.login+"@web-1", "echo", "new-ca-session"); code != 0 || strings.TrimSpace(so) != "new-ca-session" {
		t.Fatalf("an SSH session with a certificate of the new CA: exit %d, %q, %q", code, so, se)
	}

	// finish: refused while the old keys' certificates are valid, then
	// forced once the agents hold certificates of the new CA.
	waitRenewed("after activate", e.web, app)
	se = admin.fails("admin", "ca", "rotate", "finish")
	if !strings.Contains(se, "still valid until") || !strings.Contains(se, "--force") {
		t.Fatalf("finish while certificates of the old keys are valid: %s; want a refusal with the date and --force", se)
	}
	admin.must("admin", "ca", "rotate", "finish", "--force")
	for _, k := range status().Kinds {
		if k.Phase != "idle" || k.Active.Fingerprint != newFP[k.Kind] {
			t.Fatalf("after finish %s is %q signing with %s; want idle with the new key %s", k.Kind, k.Phase, k.Active.Fingerprint, newFP[k.Kind])
		}
	}

	// Nothing dropped.
	streamAlive("after finish")
	sshAlive("after finish")
	dialRetry(t, local, echoOnce, 20*time.Second)

	// The old CA's certificates are refused.
	if code, _, se := bobOld.exitCode("ssh", e.login+"@web-1", "true"); code == 0 || !strings.Contains(se, "not issued by this cluster") {
		t.Fatalf("a login of the old CA after finish: exit %d, %q; want a refusal saying the certificate is not issued by this cluster", code, se)
	}
	old := e.c.startAgentAt("web-1", oldAgentDir, e.c.addr, "", "expose:\n  - {name: other, address: 127.0.0.1:9}\n")
	t.Cleanup(func() { old.stop() })
	waitFor(t, 30*time.Second, "the agent with a certificate of the old CA to be refused", func() bool {
		return strings.Contains(old.log.String(), "not issued by this cluster")
	})
	if strings.Contains(old.log.String(), "certificate renewed") {
		t.Fatalf("the agent with a certificate of the old CA renewed it:\n%s", old.log.String())
	}

	// New SSH sessions after finish, web-1 not restarted: its SSH endpoint
	// presents at each handshake the host certificate its last renewal
	// saved (of the new host CA, which alone the client trusts now).
	if code, so, se := bob.exitCode("ssh", e.login+"@web-1", "echo", "after-finish"); code != 0 || strings.TrimSpace(so) != "after-finish" {
		t.Fatalf("an SSH session after finish, web-1 not restarted: exit %d, %q, %q; want its renewed host certificate served", code, so, se)
	}

	audit := admin.must("admin", "audit", "ls")
	for _, typ := range []string{"ca.rotation_started", "ca.rotation_activated", "ca.rotation_finished"} {
		if strings.Count(audit, typ) < 3 {
			t.Errorf("the audit log has %d %s events; want one per kind", strings.Count(audit, typ), typ)
		}
	}
}

// TestCARotationMultiGateway: two gateways share one PostgreSQL store; each
// step run on one is in force on the other at once: after start on gw-1,
// gw-2 publishes both user CAs; after activate on gw-1, a login on gw-2 is
// signed by the new X.509 CA; after finish on gw-2, gw-1 refuses a login
// certificate of the old CA.
func TestCARotationMultiGateway(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl")
	srv := pgtest.Start(t)
	db := newPGDatabases(t, srv).create(t)
	url := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", srv.User, srv.Password, srv.Addr, db)
	gws := startSharedGateways(t, url, 2, "--login-burst", "1000")
	c1, c2 := gws[0], gws[1]
	admin1 := c1.adminUser()
	admin1.login()

	admin1.must("admin", "ca", "rotate", "start")
	waitFor(t, 30*time.Second, "gw-2 to publish both user CAs", func() bool {
		return len(strings.Fields(admin1.must("ca", "--type", "ssh-user", "--gateway", c2.addr, "--ca-pin", c2.pin))) == 4
	})
	oldAdmin := &user{c: c1, name: admin1.name, pw: admin1.pw, otp: admin1.otp, home: filepath.Join(t.TempDir(), "old"), pwPath: admin1.pwPath}
	if out, err := exec.Command("cp", "-a", admin1.home, oldAdmin.home).CombinedOutput(); err != nil {
		t.Fatalf("copy the admin's login: %v\n%s", err, out)
	}

	admin1.must("admin", "ca", "rotate", "activate", "--force")
	var st api.CARotationStatus
	if err := json.Unmarshal([]byte(admin1.must("admin", "ca", "rotate", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	newCA := filepath.Join(t.TempDir(), "new-ca.pem")
	if err := os.WriteFile(newCA, []byte(st.Kinds[0].Active.Public), 0o600); err != nil {
		t.Fatal(err)
	}
	admin2 := c2.newUserHandle(admin1.name, admin1.pw, admin1.otp)
	admin2.login()
	if out, err := exec.Command(openssl, "verify", "-CAfile", newCA, filepath.Join(admin2.home, "tls.crt")).CombinedOutput(); err != nil {
		t.Fatalf("a login on gw-2 after activate on gw-1 is not signed by the new CA: %v\n%s", err, out)
	}

	admin2.must("admin", "ca", "rotate", "finish", "--force")
	waitFor(t, 30*time.Second, "gw-1 to refuse a login certificate of the old CA", func() bool {
		_, se, err := oldAdmin.run("admin", "users", "ls")
		return err != nil && strings.Contains(se, "not issued by this cluster")
	})
}
