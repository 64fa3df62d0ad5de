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
