package certs

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// gatedSigner is a CA key that can be made slow (gate: Sign waits until
// it is closed) or failing, as a Transit key in Vault can be.
type gatedSigner struct {
	crypto.Signer
	gate  atomic.Pointer[chan struct{}]
	fail  atomic.Bool
	calls atomic.Int32
}

func (g *gatedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	g.calls.Add(1)
	if ch := g.gate.Load(); ch != nil {
		<-*ch
	}
	if g.fail.Load() {
		return nil, errors.New("Vault is sealed")
	}
	return g.Signer.Sign(r, digest, opts)
}

// TestHostSignerNeverHoldsUpHandshakes: while the host CA is slow to
// sign a due certificate, other callers present the one in use at once;
// after a failure the signer is not asked again before hostRetry, and the
// valid certificate is presented meanwhile.
func TestHostSignerNeverHoldsUpHandshakes(t *testing.T) {
	s := testSealer(t, 7)
	keys, err := newTestAuthority(t).Export(s)
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Pointer[time.Time]
	setNow := func(t time.Time) { now.Store(&t) }
	setNow(testNow)
	host := &gatedSigner{}
	open := func(k store.CAKey) (crypto.Signer, error) {
		key, err := openSealedKey(k, s)
		if err != nil || k.Kind != string(store.CertSSHHost) {
			return key, err
		}
		host.Signer = key
		return host, nil
	}
	a, err := LoadWith(Config{Cluster: "prod", Clock: func() time.Time { return *now.Load() }}, keys, open)
	if err != nil {
		t.Fatal(err)
	}
	_, priv := newEd25519(t)
	hs, err := a.NewHostSigner("gateway", []string{"gw.example"}, priv)
	if err != nil {
		t.Fatal(err)
	}
	first := hs.Certificate()
	due := func(c *ssh.Certificate) time.Time {
		after, before := time.Unix(int64(c.ValidAfter), 0), time.Unix(int64(c.ValidBefore), 0)
		return after.Add(before.Sub(after) * 3 / 4)
	}

	// A slow issuance: another caller gets the certificate in use.
	gate := make(chan struct{})
	host.gate.Store(&gate)
	setNow(due(first))
	issued := make(chan *ssh.Certificate)
	go func() { issued <- hs.Certificate() }()
	for host.calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	meanwhile := make(chan *ssh.Certificate)
	go func() { meanwhile <- hs.Certificate() }()
	select {
	case c := <-meanwhile:
		if c.Serial != first.Serial {
			t.Fatalf("during the issuance another caller got serial %d; want the one in use, %d", c.Serial, first.Serial)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a caller waited for the slow issuance instead of presenting the certificate in use")
	}
	close(gate)
	second := <-issued
	if second.Serial == first.Serial || hs.Certificate().Serial != second.Serial {
		t.Fatal("the due certificate was not replaced once the issuance ended")
	}
	if n := host.calls.Load(); n != 2 {
		t.Fatalf("the host CA signed %d times; want 2 (one issuance at a time)", n)
	}

	// A failing issuance: the valid certificate meanwhile, no new attempt
	// before hostRetry.
	host.fail.Store(true)
	at := due(second)
	setNow(at)
	for range 3 {
		if c := hs.Certificate(); c == nil || c.Serial != second.Serial {
			t.Fatalf("with the host CA failing: %v; want the valid certificate in use", c)
		}
	}
	if n := host.calls.Load(); n != 3 {
		t.Fatalf("the host CA was asked %d times after one failure; want 3 in all (no retry before %v)", n, hostRetry)
	}
	host.fail.Store(false)
	setNow(at.Add(hostRetry + time.Second))
	third := hs.Certificate()
	if third.Serial == second.Serial || host.calls.Load() != 4 {
		t.Fatalf("after %v the host certificate was not issued again (%d signatures)", hostRetry, host.calls.Load())
	}

	// Expired and failing: the failure, and no new attempt before
	// hostRetry either.
	host.fail.Store(true)
	expired := time.Unix(int64(third.ValidBefore), 0).Add(time.Minute)
	setNow(expired)
	for range 3 {
		if c, err := hs.current(); c != nil || err == nil || !strings.Contains(err.Error(), "Vault is sealed") {
			t.Fatalf("with no valid certificate and the host CA failing: %v, %v; want the failure", c, err)
		}
	}
	if n := host.calls.Load(); n != 5 {
		t.Fatalf("the host CA was asked %d times; want 5 in all (one attempt, then the failure until %v passed)", n, hostRetry)
	}
	host.fail.Store(false)
	setNow(expired.Add(hostRetry + time.Second))
	if c, err := hs.current(); err != nil || c == nil {
		t.Fatalf("after %v with the host CA back: %v", hostRetry, err)
	}
}
