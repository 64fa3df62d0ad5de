package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDevFirstLook runs tunnel-gateway dev (what make dev runs) and
// follows what it prints, as a new user would: the printed tunnel login
// with the printed password and a code from the printed TOTP secret, then
// the printed tunnel ca command, whose CA a TLS client (as a browser
// would, with no other trust) verifies the console at the printed URL
// with.
func TestDevFirstLook(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	cmd := exec.Command(bin("tunnel-gateway"), "dev", "--api-addr", addr, "--ssh-addr", "")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("tunnel-gateway dev printed:\n%s", out.String())
		}
	})
	waitFor(t, 60*time.Second, "tunnel-gateway dev to listen", func() bool { return strings.Contains(out.String(), "listening on "+addr) })
	find := func(re string) []string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("tunnel-gateway dev printed nothing matching %s", re)
		}
		return m
	}
	password := find(`Password:\s+(\S+)`)[1]
	secret := find(`secret: ([A-Z2-7]+)`)[1]
	login := strings.Fields(find(`\n  (tunnel login [^\n]+)`)[1])
	caCmd := strings.Fields(find(`\((tunnel ca --type x509 [^>]+) >`)[1])
	console := find(`Web console: (https://\S+/ui/)`)[1]

	c := &cluster{t: t}
	u := c.newUserHandle("admin", password, newOTPSource(secret))
	if so, se, err := u.run(append(login[1:], "--password-file", u.pwPath, "--otp", u.otp.next(t))...); err != nil || !strings.Contains(so, "Logged in to dev as admin") {
		t.Fatalf("the printed %s: %v\n%s%s", strings.Join(login, " "), err, so, se)
	}
	caPEM := u.must(caCmd[1:]...)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("the printed tunnel ca printed no certificate:\n%s", caPEM)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := client.Get(console)
	if err != nil {
		t.Fatalf("GET %s trusting only the printed CA: %v", console, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.PeerCertificates[0].PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("GET %s: %d, key %v; want 200 under an ECDSA certificate a browser accepts", console, resp.StatusCode, resp.TLS.PeerCertificates[0].PublicKeyAlgorithm)
	}

	// A second dev on the same address fails before it makes a cluster:
	// it prints no credentials a user could mistake for the running one's.
	second, err := exec.Command(bin("tunnel-gateway"), "dev", "--api-addr", addr, "--ssh-addr", "").CombinedOutput()
	if err == nil {
		t.Fatalf("a second tunnel-gateway dev on %s started:\n%s", addr, second)
	}
	if strings.Contains(string(second), "Password") || !strings.Contains(string(second), "--api-addr "+addr+": the address is already in use") {
		t.Errorf("a second tunnel-gateway dev on the same address printed:\n%s\nwant only that --api-addr %s is already in use", second, addr)
	}
}
