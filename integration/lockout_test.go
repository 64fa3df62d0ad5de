package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// lockoutAnswer is what one raw login request got back.
type lockoutAnswer struct {
	status int
	code   string // the api.Error code, "" on success
	msg    string
}

// lockoutLogin posts one login request to the gateway at addr from the
// loopback address src, on a connection of its own.
func lockoutLogin(ctx context.Context, addr, pin, src string, req api.LoginRequest) (lockoutAnswer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return lockoutAnswer{}, err
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 30 * time.Second}
	tr := &http.Transport{
		DialContext:       dialer.DialContext,
		TLSClientConfig:   trust.PinnedClientConfig(pin, host, nil),
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	body, err := json.Marshal(req)
	if err != nil {
		return lockoutAnswer{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+api.PathLogin, bytes.NewReader(body))
	if err != nil {
		return lockoutAnswer{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Minute}).Do(hreq)
	if err != nil {
		return lockoutAnswer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return lockoutAnswer{}, err
	}
	a := lockoutAnswer{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if err := json.Unmarshal(data, &e); err != nil {
			return lockoutAnswer{}, fmt.Errorf("status %d with a body that is no API error: %q", resp.StatusCode, data)
		}
		a.code, a.msg = e.Code, e.Message
	}
	return a, nil
}

// TestLoginLockoutUnderConcurrency is the TOTP brute force against the real
// gateway: someone who knows bob's password sends, all at once and from
// several source addresses, wrong passwords, the right password with wrong
// codes, and the right password with the right code. At most the lockout's
// 5 attempts may be evaluated (as the audit log shows); every other
// attempt is told the name is locked out, without being looked at.
func TestLoginLockoutUnderConcurrency(t *testing.T) {
	// Refusals of a locked-out name are folded into one event per interval
	// (with a count); a short interval lets the test read them.
	c := startCluster(t, "--audit-fold-interval", "1s")
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	const bobPW = "bob's long password"
	var enr api.Enrollment
	if err := json.Unmarshal([]byte(admin.must("admin", "users", "add", "bob", "--role", "dev",
		"--password-file", writeSecret(t, bobPW), "--json")), &enr); err != nil {
		t.Fatalf("users add --json: %v", err)
	}

	// 60 attempts from 6 addresses: 10 each, under the default per-address
	// login burst, so that the lockout and not the rate limit answers them.
	const (
		n       = 60
		sources = 6
		max     = 5 // the gateway's default --lockout-failures
	)
	code, err := totp.GenerateCode(enr.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	valid := map[string]bool{}
	for off := -1; off <= 1; off++ {
		v, _ := totp.GenerateCode(enr.Secret, time.Now().Add(time.Duration(off)*30*time.Second))
		valid[v] = true
	}
	const right = n / 2
	reqs := make([]api.LoginRequest, n)
	for i := range reqs {
		key, err := profile.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := key.CSR("bob")
		if err != nil {
			t.Fatal(err)
		}
		pw, otp := bobPW, code
		switch {
		case i == right:
		case i%3 == 0:
			pw = fmt.Sprintf("guess number %d", i)
		default:
			for k := i; ; k += n {
				if otp = fmt.Sprintf("%06d", (100003+k*7919)%1000000); !valid[otp] {
					break
				}
			}
		}
		reqs[i] = api.LoginRequest{User: "bob", Password: pw, OTP: otp, CSR: csr,
			SSHPublicKey: strings.TrimSpace(string(sshAuthorizedKey(key)))}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	answers := make([]lockoutAnswer, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() {
			<-start
			src := fmt.Sprintf("127.0.0.%d", 2+i%sources)
			answers[i], errs[i] = lockoutLogin(ctx, c.addr, c.pin, src, reqs[i])
		})
	}
	close(start)
	wg.Wait()

	var ok, invalid, lockedOut int
	for i, a := range answers {
		switch {
		case errs[i] != nil:
			t.Errorf("attempt %d: %v", i, errs[i])
		case a.status == http.StatusOK:
			ok++
		case a.status == http.StatusUnauthorized && a.code == api.CodeInvalidCredentials:
			invalid++
		case a.status == http.StatusTooManyRequests && a.code == api.CodeLockedOut && strings.Contains(a.msg, "too many failed logins for bob"):
			lockedOut++
		default:
			t.Errorf("attempt %d: got %d %s %q; want invalid credentials or locked out", i, a.status, a.code, a.msg)
		}
	}

	// What the audit log says was evaluated. Locked-out refusals are
	// folded: an event with a count stands for that many; the folded
	// events land once their interval has ended.
	var evaluated, refused int
	srcs := map[string]bool{}
	readAudit := func() {
		var evs []audit.Event
		if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
			t.Fatalf("audit ls --json: %v", err)
		}
		evaluated, refused = 0, 0
		clear(srcs)
		for _, ev := range evs {
			if ev.Subject != "bob" || (ev.Type != audit.LoginFailure && ev.Type != audit.LoginSuccess) {
				continue
			}
			srcs[ev.SourceIP] = true
			switch {
			case ev.Type == audit.LoginSuccess:
				evaluated++
			case ev.Reason == "locked out after repeated failures":
				n := 1
				if c, err := strconv.Atoi(ev.Details["count"]); err == nil {
					n = c
				}
				refused += n
			case ev.Reason == "wrong password" || ev.Reason == "wrong code":
				evaluated++
			default:
				t.Errorf("unexpected event %+v", ev)
			}
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		readAudit()
		if refused >= lockedOut || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d attempts: %d evaluated (%d logins), %d locked out; audit: %d evaluated, %d refused, from %d addresses",
		n, ok+invalid, ok, lockedOut, evaluated, refused, len(srcs))
	if len(srcs) != sources {
		t.Errorf("the audit log shows attempts from %d addresses; want %d", len(srcs), sources)
	}
	if evaluated != ok+invalid || refused != lockedOut || ok+invalid+lockedOut != n {
		t.Errorf("answers (%d logins, %d invalid, %d locked out) and audit (%d evaluated, %d refused) disagree", ok, invalid, lockedOut, evaluated, refused)
	}
	switch ok {
	case 0:
		// The right code came after the lockout began: it was refused
		// like every other attempt past the fifth.
		if evaluated != max {
			t.Errorf("%d of %d concurrent attempts were evaluated; want exactly %d", evaluated, n, max)
		}
		if answers[right].code != api.CodeLockedOut {
			t.Errorf("the right credentials got %+v; want the lockout", answers[right])
		}
		// And bob stays locked out, whatever he sends.
		bob := c.newUserHandle("bob", bobPW, newOTPSource(enr.Secret))
		args := []string{"login", "--gateway", c.addr, "--ca-pin", c.pin, "--user", "bob", "--password-file", bob.pwPath, "--otp", bob.otp.next(t)}
		if se := bob.fails(args...); !strings.Contains(se, "too many failed logins for bob") {
			t.Errorf("tunnel login after the burst: got %q; want the lockout", se)
		}
	case 1:
		// The right code was among the first five reserved, and its login
		// released the counter: attempts that reached the gateway after
		// it start a new count, which may again evaluate up to five.
		if answers[right].status != http.StatusOK {
			t.Errorf("a wrong attempt logged in")
		}
		if evaluated > 2*max {
			t.Errorf("%d of %d concurrent attempts were evaluated; want at most %d before and %d after the one login", evaluated, n, max, max)
		}
	default:
		t.Errorf("%d attempts logged in; want at most the one with the right code", ok)
	}
	if out := admin.must("admin", "audit", "verify"); !strings.Contains(out, "Audit log intact") {
		t.Errorf("audit verify: %q", out)
	}
}
