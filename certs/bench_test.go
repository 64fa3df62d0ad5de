package certs

import (
	"testing"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// BenchmarkIssueSSHUser measures signing one SSH user certificate; the
// certs/s metric is what a gateway core can sign, before the store.
func BenchmarkIssueSSHUser(b *testing.B) {
	a := newTestAuthority(b)
	pub, _ := newEd25519(b)
	key := newSSHKey(b, pub)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice", "ubuntu"}, PublicKey: key}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkIssueX509Client measures signing one X.509 client certificate.
func BenchmarkIssueX509Client(b *testing.B) {
	a := newTestAuthority(b)
	pub, _ := newEd25519(b)
	id := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := a.IssueX509Client(X509Request{ID: id, PublicKey: pub}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkParseCSR measures checking a login's certificate request
// (parsing and proof-of-possession signature check).
func BenchmarkParseCSR(b *testing.B) {
	_, priv := newEd25519(b)
	csr := pemCSR(newCSR(b, priv))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSR(csr); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackends signs a login's pair of certificates (SSH user and
// X.509 client) with the CA keys local and in a real dev Vault on
// loopback (Transit): one login at a time, and from 4×GOMAXPROCS
// goroutines. logins/s is each backend's signing throughput. Run it with
//
//	CI=1 go test -run XXX -bench Backends -benchtime 3s ./certs/
func BenchmarkBackends(b *testing.B) {
	for _, name := range []string{"local", "vault"} {
		b.Run(name, func(b *testing.B) {
			bk := localBackend
			if name == "vault" {
				bk = newVaultBackend(b)
			}
			a := bk.authority(b)
			pub, _ := newEd25519(b)
			key := newSSHKey(b, pub)
			id := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}
			login := func() error {
				if _, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: key}); err != nil {
					return err
				}
				_, err := a.IssueX509Client(X509Request{ID: id, PublicKey: pub})
				return err
			}
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if err := login(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := login(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
			})
		})
	}
}
