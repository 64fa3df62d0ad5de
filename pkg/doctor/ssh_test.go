package doctor

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// startSSH serves SSH handshakes with x/crypto/ssh and conf (host key
// signer added) on loopback; it returns the address.
func startSSH(t *testing.T, conf *ssh.ServerConfig, signer ssh.Signer) string {
	t.Helper()
	conf.AddHostKey(signer)
	conf.NoClientAuth = true
	return serve(t, func(c net.Conn) {
		_, _, _, _ = ssh.NewServerConn(c, conf)
	})
}

// serve accepts connections on loopback and hands each to fn, closing it
// after; every goroutine is waited for at cleanup.
func serve(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				fn(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func sshOnly(t *testing.T, addr string) Report {
	t.Helper()
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(startAPI(t, ca, cert, tls13()), startQUIC(t, cert), ca)
	cfg.SSH = addr
	return run(t, cfg)
}

func TestSSHLikeTheJumpHostIsClean(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(key)
	// The jump host's own settings (gateway/internal/jumphost).
	conf := &ssh.ServerConfig{}
	conf.KeyExchanges = []string{"curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"}
	conf.Ciphers = []string{"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"}
	conf.MACs = []string{"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"}
	rep := sshOnly(t, startSSH(t, conf, signer))
	if rep.Grade != A {
		t.Fatalf("grade %s; want A\n%s", rep.Grade, dump(rep))
	}
	want(t, rep, "ssh.version", Info, "SSH-2.0-Go")
	want(t, rep, "ssh.ciphers", OK, "chacha20-poly1305@openssh.com")
	want(t, rep, "ssh.macs", OK, "hmac-sha2-256-etm@openssh.com")
	want(t, rep, "ssh.kex", OK, "curve25519-sha256")
	want(t, rep, "ssh.hostkey", OK, "ssh-ed25519")
	want(t, rep, "ssh.strict_kex", OK, "strict key exchange is offered")
}

func TestSSHWeakAlgorithmsAreFound(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(key)
	conf := &ssh.ServerConfig{}
	conf.KeyExchanges = []string{"diffie-hellman-group14-sha1", "curve25519-sha256"}
	conf.Ciphers = []string{"aes128-cbc", "aes128-ctr"}
	conf.MACs = []string{"hmac-sha1", "hmac-sha2-256"}
	rep := sshOnly(t, startSSH(t, conf, signer))
	want(t, rep, "ssh.ciphers.cbc", Fail, "CBC ciphers: aes128-cbc")
	want(t, rep, "ssh.macs.sha1", Warn, "SHA-1 MACs: hmac-sha1")
	want(t, rep, "ssh.kex.sha1", Fail, "SHA-1 key exchanges: diffie-hellman-group14-sha1")
	want(t, rep, "ssh.hostkey.sha1", Warn, "ssh-rsa")
	// x/crypto/ssh always offers strict key exchange.
	want(t, rep, "ssh.strict_kex", OK, "offered")
	if rep.Grade != C {
		t.Fatalf("grade %s; want C\n%s", rep.Grade, dump(rep))
	}
}

// fakeSSH answers like an SSH server that predates strict key exchange:
// its version, then a KEXINIT made by hand (x/crypto/ssh cannot be told
// to leave kex-strict out).
func fakeSSH(t *testing.T, pre string, k KexInit) string {
	return serve(t, func(c net.Conn) {
		_, _ = c.Write([]byte(pre + "SSH-2.0-OpenSSH_8.9\r\n"))
		_, _ = c.Write(MarshalPacket(MarshalKexInit(k)))
		var buf [64]byte
		_, _ = c.Read(buf[:]) // the doctor's version line
	})
}

var oldOpenSSH = KexInit{
	Kex:       []string{"curve25519-sha256", "ext-info-s"},
	HostKey:   []string{"rsa-sha2-512", "ssh-ed25519"},
	CiphersCS: []string{"chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"},
	CiphersSC: []string{"chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"},
	MACsCS:    []string{"hmac-sha2-256-etm@openssh.com"}, MACsSC: []string{"hmac-sha2-256-etm@openssh.com"},
	CompressCS: []string{"none"}, CompressSC: []string{"none"},
}

func TestSSHWithoutStrictKexIsTerrapinVulnerable(t *testing.T) {
	rep := sshOnly(t, fakeSSH(t, "a banner line first\r\n", oldOpenSSH))
	f := want(t, rep, "ssh.strict_kex", Fail, "vulnerable to Terrapin (CVE-2023-48795)")
	if !strings.Contains(f.Fix, "kex-strict-s-v00@openssh.com") {
		t.Errorf("fix %q does not name the extension", f.Fix)
	}
	want(t, rep, "ssh.version", Info, "OpenSSH_8.9")
	if rep.Grade != C {
		t.Fatalf("grade %s; want C\n%s", rep.Grade, dump(rep))
	}
}

func TestSSHFindingsWithoutStrictKexNorVulnerableMode(t *testing.T) {
	k := oldOpenSSH
	k.CiphersCS, k.CiphersSC = []string{"aes128-gcm@openssh.com"}, []string{"aes128-gcm@openssh.com"}
	f := SSHFindings("SSH-2.0-x", k)
	i := slices.IndexFunc(f, func(f Finding) bool { return f.ID == "ssh.strict_kex" })
	if i < 0 || f[i].Severity != Warn || f[i].Cap != B {
		t.Fatalf("got %+v; want a warning capping at B", f)
	}
}

func TestSSHUnreachableAndNotSSH(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	rep := sshOnly(t, closed)
	want(t, rep, "ssh.reachable", Fail, "cannot reach the jump host")
	// The other checks still ran.
	want(t, rep, "tls.version.1.3", OK, "TLS 1.3")
	want(t, rep, "quic.reachable", OK, "answers")

	http := serve(t, func(c net.Conn) { _, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	want(t, sshOnly(t, http), "ssh.reachable", Fail, "did not start an SSH handshake")
}

func TestReadServerHelloBounds(t *testing.T) {
	for name, in := range map[string]string{
		"no version":   strings.Repeat("hello\r\n", maxPreLines+1),
		"long line":    strings.Repeat("x", maxLineLen+1) + "\r\n",
		"SSH 1":        "SSH-1.5-old\r\n",
		"huge packet":  "SSH-2.0-x\r\n\xff\xff\xff\xff",
		"bad padding":  "SSH-2.0-x\r\n\x00\x00\x00\x05\x09abcd",
		"not kexinit":  "SSH-2.0-x\r\n" + string(MarshalPacket([]byte{21, 1, 2})),
		"cut short":    "SSH-2.0-x\r\n" + string(MarshalPacket(MarshalKexInit(oldOpenSSH))[:40]),
		"empty name":   "SSH-2.0-x\r\n" + string(MarshalPacket(MarshalKexInit(KexInit{Kex: []string{"a", ""}}))),
		"control byte": "SSH-2.0-x\r\n" + string(MarshalPacket(MarshalKexInit(KexInit{Kex: []string{"a\x01"}}))),
	} {
		if _, _, err := ReadServerHello(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	in := "SSH-2.0-OpenSSH_9.6\r\n" + string(MarshalPacket(MarshalKexInit(oldOpenSSH)))
	v, k, err := ReadServerHello(strings.NewReader(in))
	if err != nil || v != "SSH-2.0-OpenSSH_9.6" || !slices.Equal(k.CiphersSC, oldOpenSSH.CiphersSC) || !slices.Equal(k.Kex, oldOpenSSH.Kex) {
		t.Fatalf("got %q %+v %v", v, k, err)
	}
}

func FuzzReadServerHello(f *testing.F) {
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n" + string(MarshalPacket(MarshalKexInit(oldOpenSSH)))))
	f.Add([]byte("banner\r\nSSH-2.0-x\r\n\x00\x00\x00\x0c\x04\x14abcdefg"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, k, err := ReadServerHello(bytes.NewReader(b))
		if err != nil {
			return
		}
		if !strings.HasPrefix(v, "SSH-") {
			t.Fatalf("version %q accepted", v)
		}
		// What parsed re-encodes to a payload that parses the same.
		k2, err := ParseKexInit(MarshalKexInit(k))
		if err != nil || !slices.Equal(k.Kex, k2.Kex) || !slices.Equal(k.MACsSC, k2.MACsSC) || !slices.Equal(k.LanguagesSC, k2.LanguagesSC) {
			t.Fatalf("round trip: %+v -> %+v, %v", k, k2, err)
		}
		_ = SSHFindings(v, k)
	})
}

func FuzzParseKexInit(f *testing.F) {
	f.Add(MarshalKexInit(oldOpenSSH))
	f.Add([]byte{20})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKexInit(b)
		if err != nil {
			return
		}
		for _, l := range [][]string{k.Kex, k.HostKey, k.CiphersCS, k.CiphersSC, k.MACsCS, k.MACsSC} {
			if len(l) > maxNames {
				t.Fatalf("%d names accepted", len(l))
			}
			for _, n := range l {
				if n == "" || strings.ContainsAny(n, ", \x00") {
					t.Fatalf("name %q accepted", n)
				}
			}
		}
	})
}
