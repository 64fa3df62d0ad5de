package certs

import (
	"bytes"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// handshake runs an SSH handshake against a server with host key hk, from
// a client that trusts the host CAs trusted() returns, and returns the
// client's error.
func handshake(t *testing.T, hk ssh.Signer, trusted []ssh.PublicKey) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(hk)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srvConn, err := ln.Accept()
		if err != nil {
			return
		}
		defer srvConn.Close()
		if c, _, _, err := ssh.NewServerConn(srvConn, cfg); err == nil {
			c.Close()
		}
	}()
	cliConn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cliConn.Close()
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			for _, k := range trusted {
				if bytes.Equal(k.Marshal(), auth.Marshal()) {
					return true
				}
			}
			return false
		},
		Clock: fixedClock(testNow),
	}
	c, _, _, err := ssh.NewClientConn(cliConn, "gw.example:22", &ssh.ClientConfig{User: "x", HostKeyCallback: checker.CheckHostKey})
	if err == nil {
		c.Close()
	}
	cliConn.Close()
	<-done
	return err
}

// TestHostSignerFollowsRotation: a HostSigner presents a certificate of
// the active host CA, and of the new one once a rotation activates it, so
// that clients trusting only the new CA after finish still accept it.
func TestHostSignerFollowsRotation(t *testing.T) {
	s := testSealer(t, 7)
	keys, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(Config{Cluster: "prod", Clock: fixedClock(testNow)}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	_, priv := newEd25519(t)
	hs, err := a.NewHostSigner("gateway", []string{"gw.example"}, priv)
	if err != nil {
		t.Fatal(err)
	}
	oldCAs := a.SSHHostCAs()
	if err := handshake(t, hs, oldCAs); err != nil {
		t.Fatalf("handshake before the rotation: %v", err)
	}

	k, err := a.NewCAKey(store.CertSSHHost, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if keys[i].Kind == string(store.CertSSHHost) {
			keys[i].Active = false
		}
	}
	k.Active = true
	if err := a.Reload(append(keys, k)); err != nil {
		t.Fatal(err)
	}
	newCA := a.SSHHostCA()
	if err := handshake(t, hs, []ssh.PublicKey{newCA}); err != nil {
		t.Fatalf("handshake trusting only the new host CA after activation: %v", err)
	}
	if got := hs.Certificate().SignatureKey.Marshal(); !bytes.Equal(got, newCA.Marshal()) {
		t.Fatal("the host certificate is not signed by the new host CA")
	}
	if err := handshake(t, hs, oldCAs); err == nil {
		t.Fatal("a client trusting only the old host CA accepts the new certificate")
	}
}
