package certs

import (
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestCertSignerServesTheCurrentCertificate: a server whose host key is a
// CertSigner presents, at each handshake, the certificate Cert returns
// then: after the certificate changes to one of another host CA (a
// renewal after a rotation), a client trusting only that CA accepts the
// server without a restart; a certificate of another key is not presented.
func TestCertSignerServesTheCurrentCertificate(t *testing.T) {
	a1 := newTestAuthority(t)
	a2 := newTestAuthority(t)
	_, priv := newEd25519(t)
	key, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(a *Authority, pub ssh.PublicKey) *ssh.Certificate {
		c, err := a.IssueSSHHost(SSHHostRequest{Host: "web-1", Principals: []string{"gw.example"}, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var cur atomic.Pointer[ssh.Certificate]
	cur.Store(issue(a1, key.PublicKey()))
	s := &CertSigner{Key: key, Cert: cur.Load}
	if err := handshake(t, s, []ssh.PublicKey{a1.SSHHostCA()}); err != nil {
		t.Fatalf("handshake with the first certificate: %v", err)
	}
	cur.Store(issue(a2, key.PublicKey()))
	if err := handshake(t, s, []ssh.PublicKey{a2.SSHHostCA()}); err != nil {
		t.Fatalf("handshake trusting only the second CA, after the certificate changed: %v", err)
	}
	if err := handshake(t, s, []ssh.PublicKey{a1.SSHHostCA()}); err == nil {
		t.Fatal("a client trusting only the first CA accepts the new certificate")
	}
	_, other := newEd25519(t)
	otherKey, err := ssh.NewSignerFromSigner(other)
	if err != nil {
		t.Fatal(err)
	}
	cur.Store(issue(a2, otherKey.PublicKey()))
	if _, isCert := s.PublicKey().(*ssh.Certificate); isCert {
		t.Fatal("a certificate of another key is presented")
	}
}
