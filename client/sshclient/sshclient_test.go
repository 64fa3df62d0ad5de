package sshclient

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// node is an in-process SSH server standing for a node's SSH endpoint, on
// one end of a pipe.
type node struct {
	hostKey ssh.Signer // what it presents
	// exec answers an exec request on a session channel; nil closes the
	// channel without an exit status.
	exitStatus *uint32
}

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

// hostCert signs key as a host certificate for principals with ca.
func hostCert(t *testing.T, ca, key ssh.Signer, principals ...string) ssh.Signer {
	t.Helper()
	cert := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.HostCert, KeyId: "host=test", ValidPrincipals: principals,
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userCert is a session certificate valid until deadline.
func userCert(t *testing.T, ca ssh.Signer, deadline time.Time) ssh.Signer {
	t.Helper()
	key := newSigner(t)
	cert := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.UserCert, KeyId: "user=bob serial=1 session=s1", ValidPrincipals: []string{"ubuntu"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(deadline.Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve runs the node on conn until the client goes.
func (n *node) serve(conn net.Conn) {
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(n.hostKey)
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		conn.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		for req := range creqs {
			if req.Type != "exec" {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			if n.exitStatus != nil {
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{*n.exitStatus}))
				ch.Close()
				continue
			}
			// Cut without an exit status, as a node does at a deadline.
			sc.Close()
			return
		}
	}
}

// connect runs newClient against n over a loopback TCP connection (a
// net.Pipe would deadlock: both sides send their version first).
func connect(t *testing.T, n *node, cfg Config) (*ssh.Client, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); n.serve(b) }()
	t.Cleanup(func() { a.Close(); b.Close(); wg.Wait() })
	c, err := newClient(a, cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// TestHostKeyCheck: tunnel ssh accepts only a host certificate from the
// cluster's host CA that names the node.
func TestHostKeyCheck(t *testing.T) {
	hostCA, otherCA, userCA := newSigner(t), newSigner(t), newSigner(t)
	key := newSigner(t)
	cfg := Config{Node: "web-1", Login: "ubuntu", Signer: userCert(t, userCA, time.Now().Add(time.Hour)), HostCAs: []ssh.PublicKey{hostCA.PublicKey()}}
	for _, tc := range []struct {
		name    string
		hostKey ssh.Signer
		wantErr string
	}{
		{"host certificate from the host CA for web-1", hostCert(t, hostCA, key, "web-1", "web-1.prod"), ""},
		{"plain key", key, "web-1 did not prove it is web-1"},
		{"certificate from another CA", hostCert(t, otherCA, key, "web-1"), "web-1 did not prove it is web-1"},
		{"certificate for another node", hostCert(t, hostCA, key, "web-2", "web-2.prod"), "web-1 did not prove it is web-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := connect(t, &node{hostKey: tc.hostKey}, cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v; want a refusal with %q", err, tc.wantErr)
			}
		})
	}
}

// TestEndReason: a command cut without an exit status says why: the
// session expired when its deadline has passed, else that the connection
// closed.
func TestEndReason(t *testing.T) {
	hostCA, userCA := newSigner(t), newSigner(t)
	host := hostCert(t, hostCA, newSigner(t), "web-1")
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer stdin.Close()
	zero, seven := uint32(0), uint32(7)
	past := time.Now().Add(-time.Second).Truncate(time.Second)
	for _, tc := range []struct {
		name     string
		deadline time.Time
		status   *uint32
		want     string
		wantCode int
	}{
		{name: "cut at the deadline", deadline: past, want: "session expired at " + past.UTC().Format("15:04:05") + " UTC"},
		{name: "cut before the deadline", deadline: time.Now().Add(time.Hour), want: "the connection closed before the command finished"},
		{name: "exit 0", deadline: time.Now().Add(time.Hour), status: &zero},
		{name: "exit 7", deadline: time.Now().Add(time.Hour), status: &seven, wantCode: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Node: "web-1", Login: "ubuntu", Signer: userCert(t, userCA, tc.deadline), HostCAs: []ssh.PublicKey{hostCA.PublicKey()}}
			c, err := connect(t, &node{hostKey: host, exitStatus: tc.status}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = Run(t.Context(), c, []string{"true"}, stdin, io.Discard, io.Discard)
			var ee *ExitError
			switch {
			case tc.want != "":
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Run: %v; want %q", err, tc.want)
				}
			case tc.wantCode != 0:
				if !errors.As(err, &ee) || ee.Code != tc.wantCode {
					t.Errorf("Run: %v; want exit status %d", err, tc.wantCode)
				}
			case err != nil:
				t.Errorf("Run: %v", err)
			}
		})
	}
}
