package sshcert

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheck covers each refusal with the clock injected.
func TestCheck(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	userCA := newSigner(t)
	var cas []ssh.PublicKey
	revoked := uint64(0)
	c := &Checker{
		UserCAs:   func() []ssh.PublicKey { return cas },
		Clock:     func() time.Time { return now },
		IsRevoked: func(c *ssh.Certificate) bool { return c.Serial == revoked },
	}
	remote := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5555}
	mk := func(mod func(*ssh.Certificate), signer ssh.Signer) *ssh.Certificate {
		c := &ssh.Certificate{
			Key:             newSigner(t).PublicKey(),
			Serial:          9,
			CertType:        ssh.UserCert,
			KeyId:           "user=alice serial=9 session=s1",
			ValidPrincipals: []string{"ubuntu"},
			ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
			ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		}
		if mod != nil {
			mod(c)
		}
		if err := c.SignCert(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		return c
	}
	caCert := mk(func(c *ssh.Certificate) { c.Key = userCA.PublicKey() }, userCA)
	signedByCert := mk(nil, userCA)
	signedByCert.SignatureKey = caCert // x/crypto refuses to sign so
	tests := []struct {
		name      string
		key       ssh.PublicKey
		principal string
		remote    net.Addr
		setup     func()
		wantErr   error
		wantText  string
	}{
		{name: "good", key: mk(nil, userCA), principal: "ubuntu"},
		{name: "any principal", key: mk(nil, userCA)},
		{name: "plain key", key: newSigner(t).PublicKey(), wantErr: ErrNotCertificate},
		{name: "host certificate", key: mk(func(c *ssh.Certificate) { c.CertType = ssh.HostCert }, userCA), wantErr: ErrNotUserCert},
		{name: "wrong principal", key: mk(nil, userCA), principal: "root", wantErr: ErrInvalid, wantText: "not in the set"},
		{name: "expired by the injected clock", key: mk(func(c *ssh.Certificate) { c.ValidBefore = uint64(now.Add(-time.Second).Unix()) }, userCA), wantErr: ErrInvalid, wantText: "expired"},
		{name: "not yet valid", key: mk(func(c *ssh.Certificate) { c.ValidAfter = uint64(now.Add(time.Minute).Unix()) }, userCA), wantErr: ErrInvalid, wantText: "not yet valid"},
		{name: "empty principals", key: mk(func(c *ssh.Certificate) { c.ValidPrincipals = nil }, userCA), wantErr: ErrNoPrincipals},
		{name: "another CA", key: mk(nil, newSigner(t)), wantErr: ErrUntrustedCA},
		{name: "signed by a certificate", key: signedByCert, wantErr: ErrSignedByCert},
		{name: "certificate offered as an authority", key: mk(nil, userCA), setup: func() { cas = []ssh.PublicKey{caCert} }, wantErr: ErrUntrustedCA},
		{name: "revoked", key: mk(nil, userCA), setup: func() { revoked = 9 }, wantErr: ErrRevokedCertificate},
		{name: "source address allowed", key: mk(func(c *ssh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "192.0.2.1,10.1.0.0/16"}
		}, userCA)},
		{name: "source address refused", key: mk(func(c *ssh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "192.0.2.1"}
		}, userCA), wantErr: ErrSourceAddress, wantText: `address 10.1.2.3 is not allowed by the certificate's source-address "192.0.2.1"`},
		{name: "source address with no IP remote", remote: &net.UnixAddr{Name: "x"}, key: mk(func(c *ssh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "0.0.0.0/0"}
		}, userCA), wantErr: ErrSourceAddress, wantText: "may be used only from 0.0.0.0/0"},
		{name: "IPv4-mapped remote", remote: &net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3")}, key: mk(func(c *ssh.Certificate) {
			c.CriticalOptions = map[string]string{"source-address": "10.1.2.3"}
		}, userCA)},
		{name: "unknown critical option", key: mk(func(c *ssh.Certificate) {
			c.CriticalOptions = map[string]string{"force-command": "true"}
		}, userCA), wantErr: ErrInvalid, wantText: "unsupported critical option"},
		{name: "bad key id", key: mk(func(c *ssh.Certificate) { c.KeyId = "serial=9" }, userCA), wantErr: ErrKeyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cas = []ssh.PublicKey{userCA.PublicKey()}
			revoked = 0
			if tt.setup != nil {
				tt.setup()
			}
			r := tt.remote
			if r == nil {
				r = remote
			}
			got, err := c.Check(tt.key, tt.principal, r)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Check: %v", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Check = %v; want %v", err, tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), tt.wantText):
				t.Fatalf("Check = %v; want it to say %q", err, tt.wantText)
			case err == nil && got.KeyID != (KeyID{User: "alice", Serial: "9", Session: "s1"}):
				t.Errorf("Check: key id %+v; want alice's session s1", got.KeyID)
			}
		})
	}
}
