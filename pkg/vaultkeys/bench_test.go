package vaultkeys

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkTransitSign measures one Ed25519 signature through Transit on a
// loopback dev Vault: the floor under every certificate the gateway signs
// with the Vault backend.
func BenchmarkTransitSign(b *testing.B) {
	srv := startVault(b, false)
	s := newSigner(b, newClient(b, srv), "ca")
	msg := make([]byte, 300) // about an SSH certificate's signed bytes
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(nil, msg, crypto.Hash(0)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
}

// BenchmarkTransitSignParallel is BenchmarkTransitSign from GOMAXPROCS
// goroutines: the throughput of concurrent logins.
func BenchmarkTransitSignParallel(b *testing.B) {
	srv := startVault(b, false)
	s := newSigner(b, newClient(b, srv), "ca")
	msg := make([]byte, 300)
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(nil, msg, crypto.Hash(0)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
}

// BenchmarkSSHUserCert signs an SSH user certificate like
// certs.IssueSSHUser does, with a local key and through Transit, in the
// same run.
func BenchmarkSSHUserCert(b *testing.B) {
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(userPub)
	run := func(b *testing.B, ca crypto.Signer) {
		signer, err := ssh.NewSignerFromSigner(ca)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			c := &ssh.Certificate{Key: key, Serial: 1, CertType: ssh.UserCert, KeyId: "alice",
				ValidPrincipals: []string{"alice", "ubuntu"}, ValidAfter: uint64(now.Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
				Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
			if err := c.SignCert(rand.Reader, signer); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	}
	b.Run("local", func(b *testing.B) {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		run(b, priv)
	})
	b.Run("transit", func(b *testing.B) {
		srv := startVault(b, false)
		run(b, newSigner(b, newClient(b, srv), "ca"))
	})
}

// BenchmarkTransitSealOpen measures sealing and opening a 32-byte secret
// with the Transit KEK (a TOTP secret or a CA key at start-up).
func BenchmarkTransitSealOpen(b *testing.B) {
	srv := startVault(b, false)
	s := newSealer(b, newClient(b, srv), "kek")
	pt := make([]byte, 32)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		sealed, err := s.Seal(pt, "totp/alice")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Open(sealed, "totp/alice"); err != nil {
			b.Fatal(err)
		}
	}
}
