package jumphost

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

func TestLoginAndChannel(t *testing.T) {
	e := newEnv(t)
	c, cert := e.login("bob")
	for _, target := range []string{"web-1:22", "web-1." + cluster + ":22", "WEB-2:22"} {
		if err := echoThrough(c, target); err != nil {
			t.Errorf("channel to %s: %v", target, err)
		}
	}
	opened := e.sessionsOpened()
	if len(opened) != 3 {
		t.Fatalf("%d sessions opened; want 3", len(opened))
	}
	for _, s := range opened {
		if s.User != "bob" || s.Login != "ubuntu" {
			t.Errorf("session %+v; want bob's, for login ubuntu", s)
		}
		// The session ends with the login certificate (or the role's
		// maximum, here the cluster's, which is longer).
		if want := time.Unix(int64(cert.ValidBefore), 0); s.Deadline.After(want) {
			t.Errorf("session deadline %s is after the certificate's expiry %s", s.Deadline, want)
		}
	}
	if opened[0].Node != "web-1" || opened[1].Node != "web-1" || opened[2].Node != "web-2" {
		t.Errorf("sessions for %s, %s, %s; want web-1, web-1, web-2", opened[0].Node, opened[1].Node, opened[2].Node)
	}
}

// TestRules: the rules of the jump host, each asserted by its refusal.
func TestRules(t *testing.T) {
	e := newEnv(t)
	bobSigner, _ := e.loginCert("bob", certOpts{})

	t.Run("user must match the certificate", func(t *testing.T) {
		_, banner, err := e.dial("alice", bobSigner)
		if err == nil || !strings.Contains(banner, "connect to the jump host as your tunnel user (bob@gateway)") {
			t.Errorf("bob's certificate as alice: err %v, banner %q; want a refusal naming bob", err, banner)
		}
	})
	t.Run("session certificates refused", func(t *testing.T) {
		signer, _ := e.loginCert("bob", certOpts{session: "abcdefghijklmnop"})
		_, banner, err := e.dial("bob", signer)
		if err == nil || !strings.Contains(banner, errSessionCert.Error()) {
			t.Errorf("a session certificate: err %v, banner %q; want %q", err, banner, errSessionCert)
		}
	})
	t.Run("unrecorded certificate refused", func(t *testing.T) {
		signer, _ := e.loginCert("bob", certOpts{noRecord: true})
		_, banner, err := e.dial("bob", signer)
		if err == nil || !strings.Contains(banner, errUnknownSerial.Error()) {
			t.Errorf("an unrecorded certificate: err %v, banner %q; want %q", err, banner, errUnknownSerial)
		}
	})
	t.Run("expired certificate refused", func(t *testing.T) {
		signer, _ := e.loginCert("bob", certOpts{ttl: time.Second})
		time.Sleep(2 * time.Second)
		_, banner, err := e.dial("bob", signer)
		if err == nil || !strings.Contains(banner, "certificate refused") {
			t.Errorf("an expired certificate: err %v, banner %q; want it refused", err, banner)
		}
	})

	c, banner, err := e.dial("bob", bobSigner)
	if err != nil {
		t.Fatalf("bob's own login: %v (%q)", err, banner)
	}
	defer c.Close()
	for _, tc := range []struct{ target, want string }{
		{"web-1:80", "the jump host only reaches NODE:22 or NODE.prod:22 (asked for web-1:80)"},
		{"web-1:2222", "only reaches NODE:22"},
		{"-web-1:22", "only reaches NODE:22"},
		{"web 1:22", "only reaches NODE:22"},
		{"127.0.0.1:22", "your roles do not allow 127.0.0.1"},
		{"db-1:22", "your roles do not allow db-1"},
	} {
		err := echoThrough(c, tc.target)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("channel to %s: %v; want a refusal with %q", tc.target, err, tc.want)
		}
	}
	if err := echoThrough(c, "web-1:22"); err != nil {
		t.Errorf("after the refusals, web-1:22: %v", err)
	}
}

// TestRevokedCertificate: a revoked certificate of a user who is not
// locked logs in to nothing and, on a connection that authenticated
// before, opens no new channel.
func TestRevokedCertificate(t *testing.T) {
	e := newEnv(t)
	held, cert := e.login("bob")
	if err := echoThrough(held, "web-1:22"); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	e.revokeSerial(cert)
	err := echoThrough(held, "web-1:22")
	if err == nil || !strings.Contains(err.Error(), "your certificate was revoked by an administrator") {
		t.Errorf("a new channel on the held connection: %v; want the revocation refusal", err)
	}

	signer, cert2 := e.loginCert("bob", certOpts{})
	e.revokeSerial(cert2)
	_, banner, err := e.dial("bob", signer)
	if err == nil || !strings.Contains(banner, "your certificate was revoked by an administrator") {
		t.Errorf("login with a revoked certificate: err %v, banner %q; want the revocation refusal", err, banner)
	}
}

// TestChannelRecheck: the user is checked again on every new channel, so
// a held connection follows the lock both ways (lock alone, without
// revoking the certificate: the certificate stays good).
func TestChannelRecheck(t *testing.T) {
	e := newEnv(t)
	held, _ := e.login("bob")
	e.lockUser("bob", true)
	err := echoThrough(held, "web-1:22")
	if err == nil || !strings.Contains(err.Error(), "your account is locked or gone") {
		t.Errorf("a channel while bob is locked: %v; want the lock refusal", err)
	}
	e.lockUser("bob", false)
	if err := echoThrough(held, "web-1:22"); err != nil {
		t.Errorf("after unlock (certificate never revoked): %v", err)
	}
}

// TestUserLockClosesConnections: users lock (sessions.RevokeUser) closes
// the user's held jump connections, not others', and the certificate stays
// refused after the unlock.
func TestUserLockClosesConnections(t *testing.T) {
	e := newEnv(t)
	bobSigner, _ := e.loginCert("bob", certOpts{})
	held, banner, err := e.dial("bob", bobSigner)
	if err != nil {
		t.Fatalf("login: %v (%q)", err, banner)
	}
	defer held.Close()
	alice, _ := e.login("alice")

	e.lockUser("bob", true)
	must(t, e.sess.RevokeUser(context.Background(), "bob", "admin"))
	waitClosed(t, held, "bob was locked")
	if err := echoThrough(alice, "web-1:22"); err != nil {
		t.Errorf("alice's connection after bob's lock: %v", err)
	}

	e.lockUser("bob", false)
	_, banner, err = e.dial("bob", bobSigner)
	if err == nil || !strings.Contains(banner, "your certificate was revoked by an administrator") {
		t.Errorf("bob's old certificate after unlock: err %v, banner %q; want it refused as revoked", err, banner)
	}
	if c, banner, err := e.dial("bob", must2(e.loginCert("bob", certOpts{}))); err != nil {
		t.Errorf("bob with a new login after unlock: %v (%q)", err, banner)
	} else {
		c.Close()
	}
}

func must2[A, B any](a A, _ B) A { return a }

// TestSessionRevokeRefusesItsCertificate: sessions revoke of a jump
// session revokes the login certificate it was opened with.
func TestSessionRevokeRefusesItsCertificate(t *testing.T) {
	e := newEnv(t)
	held, _ := e.login("bob")
	ch, err := held.Dial("tcp", "web-1:22")
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var sess store.Session
	waitUntil(t, "the jump session to be opened", func() bool {
		if o := e.sessionsOpened(); len(o) == 1 {
			sess = o[0]
			return true
		}
		return false
	})
	if _, err := e.sess.Revoke(context.Background(), sess.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	err = echoThrough(held, "web-1:22")
	if err == nil || !strings.Contains(err.Error(), "your certificate was revoked by an administrator") {
		t.Errorf("a new channel after sessions revoke: %v; want the revocation refusal", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
