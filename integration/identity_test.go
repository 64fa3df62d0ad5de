package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// TestLoginIssuesCertificatesThatRealToolsAccept is the story of the
// identity core: init, run, log in with a TOTP code, and check the
// certificates with ssh-keygen, openssl and a real sshd.
func TestLoginIssuesCertificatesThatRealToolsAccept(t *testing.T) {
	sshKeygen := testenv.LookPath(t, "ssh-keygen")
	openssl := testenv.LookPath(t, "openssl")
	testenv.LookPath(t, "ssh")

	c := startCluster(t, "--login-burst", "1000")
	alice := c.adminUser()
	out := alice.login()
	if !strings.Contains(out, "Logged in to itest as alice") {
		t.Errorf("login printed %q; want it to say who is logged in where", out)
	}
	for _, f := range []string{"key", "key-cert.pub", "tls.crt", "profile.json"} {
		fi, err := os.Stat(filepath.Join(alice.home, f))
		if err != nil {
			t.Fatalf("after login: %v", err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %#o; want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(alice.home); fi.Mode().Perm() != 0o700 {
		t.Errorf("TUNNEL_HOME has mode %#o; want 0700", fi.Mode().Perm())
	}

	// The SSH certificate, as OpenSSH reads it.
	certFile := filepath.Join(alice.home, "key-cert.pub")
	kg, err := exec.Command(sshKeygen, "-L", "-f", certFile).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, kg)
	}
	listing := string(kg)
	for _, want := range []string{"user certificate", `Key ID: "user=alice serial=`, "Principals: \n                alice\n", "permit-pty"} {
		if !strings.Contains(listing, want) {
			t.Errorf("ssh-keygen -L output lacks %q:\n%s", want, listing)
		}
	}
	from, to := validWindow(t, listing)
	if got := to.Sub(from); got < time.Hour || got > time.Hour+2*time.Minute {
		t.Errorf("SSH certificate window %s..%s is %s long; want 1h plus the 1-minute backdating", from, to, got)
	}
	if from.After(time.Now().Add(-30 * time.Second)) {
		t.Errorf("SSH certificate valid from %s; want it backdated about a minute for clock skew", from)
	}

	// The X.509 certificate, as OpenSSL reads it.
	tlsCrt := filepath.Join(alice.home, "tls.crt")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	caPEM := alice.must("ca", "--type", "x509")
	if err := os.WriteFile(caFile, []byte(caPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	ver, err := exec.Command(openssl, "verify", "-CAfile", caFile, "-purpose", "sslclient", tlsCrt).CombinedOutput()
	if err != nil || !strings.Contains(string(ver), ": OK") {
		t.Errorf("openssl verify: %v\n%s", err, ver)
	}
	text, err := exec.Command(openssl, "x509", "-in", tlsCrt, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, text)
	}
	if !strings.Contains(string(text), "URI:tunnel://itest/user/alice") {
		t.Errorf("X.509 certificate lacks the identity URI SAN:\n%s", text)
	}
	// A certificate from another cluster's CA does not verify.
	other := startCluster(t, "--login-burst", "1000")
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	os.WriteFile(otherCA, []byte(alice.must("ca", "--type", "x509", "--gateway", other.addr, "--ca-pin", other.pin)), 0o644)
	if out, err := exec.Command(openssl, "verify", "-CAfile", otherCA, tlsCrt).CombinedOutput(); err == nil {
		t.Errorf("openssl verify against another cluster's CA succeeded:\n%s", out)
	}

	// Status tells who and for how long, in JSON for scripts.
	var st struct {
		User   string   `json:"user"`
		Roles  []string `json:"roles"`
		Logins []string `json:"logins"`
		Valid  bool     `json:"valid"`
	}
	if err := json.Unmarshal([]byte(alice.must("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.User != "alice" || !st.Valid || len(st.Roles) != 1 || st.Roles[0] != "admin" {
		t.Errorf("status = %+v; want alice, valid, role admin", st)
	}

	// An OS login for a real sshd: a role granting the current OS user, and
	// a user bob holding it, with a certificate that lives 8 seconds.
	osUser := testenv.CurrentUser(t)
	alice.must("admin", "roles", "add", "ops", "--login", osUser, "--max-ttl", "2h")
	bob := addUser(t, alice, "bob", "ops")
	bob.login("--ttl", "8s")

	userCA := alice.must("ca", "--type", "ssh-user")
	caKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(userCA))
	if err != nil {
		t.Fatalf("tunnel ca --type ssh-user printed %q: %v", userCA, err)
	}
	sshd := sshdtest.Start(t, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{caKey}})
	args := sshd.SSHArgs(filepath.Join(bob.home, "key"), filepath.Join(bob.home, "key-cert.pub"))
	got, err := exec.Command("ssh", append(args, osUser+"@127.0.0.1", "echo", "hello-from-sshd")...).CombinedOutput()
	if err != nil || !strings.Contains(string(got), "hello-from-sshd") {
		t.Fatalf("ssh with the issued certificate: %v\n%s\nsshd log:\n%s", err, got, sshd.Log())
	}

	// After its deadline the same certificate is refused by sshd, by the
	// CLI, and by the gateway.
	waitUntilExpired(t, filepath.Join(bob.home, "key-cert.pub"))
	got, err = exec.Command("ssh", append(args, osUser+"@127.0.0.1", "true")...).CombinedOutput()
	if err == nil {
		t.Errorf("ssh with an expired certificate succeeded:\n%s", got)
	}
	if msg := bob.fails("status"); !regexp.MustCompile(`certificate expired .* ago: run tunnel login`).MatchString(msg) {
		t.Errorf("status after expiry said %q; want 'certificate expired ... ago: run tunnel login'", msg)
	}
	if msg := bob.fails("admin", "users", "ls"); !strings.Contains(msg, "certificate expired") {
		t.Errorf("admin call after expiry said %q; want it to say the certificate expired", msg)
	}
}

// TestLoginRefusals checks that each way a login can go wrong is refused
// with a clear message, and that the audit log records it all.
func TestLoginRefusals(t *testing.T) {
	c := startCluster(t, "--login-burst", "1000")
	alice := c.adminUser()
	alice.login()
	carol := addUser(t, alice, "carol")

	// A replayed code: log in, then use the same code again.
	code := carol.otp.next(t)
	base := []string{"login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "carol", "--password-file", carol.pwPath}
	carol.must(append(base, "--otp", code)...)
	for _, variant := range []string{code, code[:3] + " " + code[3:], code[:3] + "-" + code[3:], " " + code + "\n"} {
		if msg := carol.fails(append(base, "--otp", variant)...); !strings.Contains(msg, "already used") {
			t.Errorf("replayed code %q: got %q; want a message saying the code was already used", variant, msg)
		}
	}

	// A wrong pin: the CLI refuses to talk to the gateway at all.
	wrongPin := "sha256:" + strings.Repeat("ab", 32)
	msg := carol.fails("login", "--gateway", c.addr, "--ca-pin", wrongPin, "--user", "carol", "--password-file", carol.pwPath, "--otp", "123456")
	if !strings.Contains(msg, "pinned") {
		t.Errorf("wrong pin: got %q; want a message about the pinned CA", msg)
	}
	if msg := carol.fails("login", "--gateway", c.addr, "--ca-pin", "sha256:1234", "--user", "carol", "--password-file", carol.pwPath, "--otp", "123456"); !strings.Contains(msg, "64 hex digits") {
		t.Errorf("malformed pin: got %q", msg)
	}

	// Unknown user, wrong password, wrong code: the same answer.
	wrongPW := writeSecret(t, "not the right password")
	cases := map[string][]string{
		"unknown user":   {"login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "nobody", "--password-file", carol.pwPath, "--otp", "123456"},
		"wrong password": {"login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "dave", "--password-file", wrongPW, "--otp", "123456"},
	}
	dave := addUser(t, alice, "dave")
	cases["wrong code"] = []string{"login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "dave", "--password-file", dave.pwPath, "--otp", wrongCode(dave.otp.current(t))}
	answers := map[string]bool{}
	for name, args := range cases {
		msg := strings.TrimSpace(dave.fails(args...))
		if !strings.Contains(msg, "invalid credentials") {
			t.Errorf("%s: got %q; want invalid credentials", name, msg)
		}
		answers[msg] = true
	}
	if len(answers) != 1 {
		t.Errorf("the three failures gave different answers %v; want one", answers)
	}

	// Lockout after five failures, keyed on the canonical name.
	erin := addUser(t, alice, "erin")
	for i, name := range []string{"erin", "Erin", " ERIN ", "erin", "eRin"} {
		msg := erin.fails("login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", name, "--password-file", wrongPW, "--otp", "123456")
		if !strings.Contains(msg, "invalid credentials") {
			t.Fatalf("failure %d: got %q", i+1, msg)
		}
	}
	msg = erin.fails("login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "erin", "--password-file", erin.pwPath, "--otp", erin.otp.next(t))
	if !strings.Contains(msg, "too many failed logins") {
		t.Errorf("sixth attempt with the right credentials: got %q; want a lockout message", msg)
	}
	users := alice.must("admin", "users", "ls")
	if !regexp.MustCompile(`erin\s+\(none\)\s+locked out until`).MatchString(users) {
		t.Errorf("users ls does not show erin locked out:\n%s", users)
	}
	alice.must("admin", "users", "unlock", "erin")
	erin.login()

	// A TTL above the role's maximum is refused, not silently cut.
	alice.must("admin", "roles", "add", "short", "--max-ttl", "30m")
	frank := addUser(t, alice, "frank", "short")
	msg = frank.fails("login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "frank", "--password-file", frank.pwPath, "--otp", frank.otp.next(t), "--ttl", "2h")
	if !strings.Contains(msg, "exceeds your maximum of 30m") {
		t.Errorf("TTL above the role maximum: got %q", msg)
	}

	// A non-admin cannot use the admin API.
	if msg := frank.fails("admin", "users", "ls"); !strings.Contains(msg, "not logged in") {
		t.Errorf("admin call without login: got %q", msg)
	}
	frank.login("--ttl", "10m")
	if msg := frank.fails("admin", "users", "ls"); !strings.Contains(msg, "needs an admin role") {
		t.Errorf("non-admin admin call: got %q", msg)
	}

	// An admin lock refuses the next login with a clear message.
	alice.must("admin", "users", "lock", "frank")
	if msg := frank.fails("login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "frank", "--password-file", frank.pwPath, "--otp", frank.otp.next(t)); !strings.Contains(msg, "locked") {
		t.Errorf("login of a locked user: got %q", msg)
	}

	// The audit log has it all, no secret in it, and its chain holds.
	var evs []struct {
		Type    string `json:"type"`
		Actor   string `json:"actor"`
		Reason  string `json:"reason"`
		Outcome string `json:"outcome"`
	}
	raw := alice.must("admin", "audit", "ls", "--json")
	if err := json.Unmarshal([]byte(raw), &evs); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, e := range evs {
		if e.Type == "login.failure" {
			reasons[e.Reason] = true
		}
	}
	for _, want := range []string{"replayed code", "unknown user", "wrong password", "wrong code", "locked out after repeated failures", "admin.denied"} {
		if want == "admin.denied" {
			if !strings.Contains(raw, `"type": "admin.denied"`) {
				t.Errorf("audit log lacks an admin.denied event")
			}
			continue
		}
		if !reasons[want] {
			t.Errorf("audit log lacks a login failure with reason %q; has %v", want, reasons)
		}
	}
	for _, secret := range []string{c.adminPW, carol.pw, dave.pw, "not the right password", code} {
		if strings.Contains(raw, secret) {
			t.Errorf("the audit log contains a secret (%q)", secret)
		}
	}
	if out := alice.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify: %q", out)
	}

	// SIGTERM shuts the gateway down cleanly.
	if err := c.stop(); err != nil {
		t.Errorf("gateway exit after SIGTERM: %v; want a clean exit", err)
	}
}

// TestGatewayDataDirIsSealed checks that nothing secret is stored in the
// clear: the TOTP secret and the CA private keys are not in the database
// file in any readable form, and the files are private.
func TestGatewayDataDirIsSealed(t *testing.T) {
	c := startCluster(t)
	if err := c.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	db, err := os.ReadFile(filepath.Join(c.dataDir, "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(db), c.adminOTP.secret) {
		t.Error("the TOTP secret is stored in the clear")
	}
	if strings.Contains(string(db), "PRIVATE KEY") || strings.Contains(string(db), c.adminPW) {
		t.Error("a private key or the password is stored in the clear")
	}
	for _, f := range []string{"gateway.db", "kek"} {
		fi, err := os.Stat(filepath.Join(c.dataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %#o; want no access for group and others", f, fi.Mode().Perm())
		}
	}
	// A second init on the same directory is refused.
	out, err := exec.Command(bin("tunnel-gateway"), "init", "--data-dir", c.dataDir, "--admin", "bob", "--admin-password-file", writeSecret(t, "bob's password is long")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already holds a cluster") {
		t.Errorf("second init: %v %s; want a refusal", err, out)
	}
	// An init without an admin is refused before it creates anything:
	// nobody could ever log in to the cluster it would make.
	bare := filepath.Join(t.TempDir(), "bare")
	out, err = exec.Command(bin("tunnel-gateway"), "init", "--data-dir", bare).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--admin NAME is required") {
		t.Errorf("init without --admin: %v %s; want a refusal naming --admin", err, out)
	}
	if _, err := os.Stat(bare); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("init without --admin created %s (%v)", bare, err)
	}
	// Without its key-encryption key the gateway does not start, and says why.
	os.Rename(filepath.Join(c.dataDir, "kek"), filepath.Join(c.dataDir, "kek.moved"))
	out, err = exec.Command(bin("tunnel-gateway"), "run", "--data-dir", c.dataDir, "--api-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "key-encryption key") {
		t.Errorf("run without the KEK: %v %s; want a clear refusal", err, out)
	}
}

// addUser has admin create a user with the given roles and returns a
// handle holding their password and TOTP secret.
func addUser(t testing.TB, admin *user, name string, roles ...string) *user {
	t.Helper()
	pw := name + "-password-long-enough"
	args := []string{"admin", "users", "add", name, "--password-file", writeSecret(t, pw), "--json"}
	for _, r := range roles {
		args = append(args, "--role", r)
	}
	var enr struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(admin.must(args...)), &enr); err != nil || enr.Secret == "" {
		t.Fatalf("users add --json: %v", err)
	}
	return admin.c.newUserHandle(name, pw, newOTPSource(enr.Secret))
}

func wrongCode(code string) string {
	b := []byte(code)
	b[0] = '0' + (b[0]-'0'+5)%10
	return string(b)
}

var validRE = regexp.MustCompile(`Valid: from (\S+) to (\S+)`)

func validWindow(t *testing.T, listing string) (time.Time, time.Time) {
	t.Helper()
	m := validRE.FindStringSubmatch(listing)
	if m == nil {
		t.Fatalf("no validity window in:\n%s", listing)
	}
	// ssh-keygen prints local time without a zone.
	from, err1 := time.ParseInLocation("2006-01-02T15:04:05", m[1], time.Local)
	to, err2 := time.ParseInLocation("2006-01-02T15:04:05", m[2], time.Local)
	if err1 != nil || err2 != nil {
		t.Fatalf("parse validity window %q: %v %v", m[0], err1, err2)
	}
	return from, to
}

// waitUntilExpired sleeps until the SSH certificate in path is past its
// valid_before (plus a second).
func waitUntilExpired(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	cert := pk.(*ssh.Certificate)
	time.Sleep(time.Until(time.Unix(int64(cert.ValidBefore), 0)) + 1500*time.Millisecond)
}
