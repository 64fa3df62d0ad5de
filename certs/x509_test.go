package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

func TestIssueX509(t *testing.T) { forEachBackend(t, testIssueX509) }

func testIssueX509(t *testing.T, b backend) {
	a := b.authority(t)
	edPub, _ := newEd25519(t)
	ecKey := newECDSA(t, elliptic.P256())
	alice := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}
	agent := identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db1"}
	gateway := identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gw-1"}

	tests := []struct {
		name      string
		server    bool
		req       X509Request
		wantTTL   time.Duration
		wantUsage []x509.ExtKeyUsage
	}{
		{
			name:      "client default TTL",
			req:       X509Request{ID: alice, PublicKey: edPub},
			wantTTL:   DefaultUserTTL,
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:      "client ECDSA P-256",
			req:       X509Request{ID: alice, PublicKey: &ecKey.PublicKey, TTL: 30 * time.Minute},
			wantTTL:   30 * time.Minute,
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:      "agent at its role maximum",
			req:       X509Request{ID: agent, PublicKey: edPub, TTL: 8 * time.Hour, MaxTTL: 8 * time.Hour},
			wantTTL:   8 * time.Hour,
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:      "default TTL above the role maximum is shortened",
			req:       X509Request{ID: alice, PublicKey: edPub, MaxTTL: 20 * time.Minute},
			wantTTL:   20 * time.Minute,
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:      "client at the cluster maximum",
			req:       X509Request{ID: alice, PublicKey: edPub, TTL: ClusterMaxTTL},
			wantTTL:   ClusterMaxTTL,
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:   "server",
			server: true,
			req: X509Request{ID: gateway, PublicKey: edPub, TTL: 12 * time.Hour,
				DNSNames: []string{"gw.example.com", "*.gw.example.com"}, IPAddresses: []net.IP{net.IPv4(192, 0, 2, 1), net.ParseIP("2001:db8::1")}},
			wantTTL:   12 * time.Hour,
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		},
		{
			name:      "server by IP only",
			server:    true,
			req:       X509Request{ID: gateway, PublicKey: &ecKey.PublicKey, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}},
			wantTTL:   DefaultMachineTTL, // machines are not capped by the user maximum
			wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issue := a.IssueX509Client
			if tt.server {
				issue = a.IssueX509Server
			}
			c, err := issue(tt.req)
			if err != nil {
				t.Fatalf("issue: %v", err)
			}
			if got, want := c.Subject.CommonName, tt.req.ID.Name; got != want {
				t.Errorf("CN = %q; want %q", got, want)
			}
			if len(c.URIs) != 1 {
				t.Fatalf("got %d URI SANs; want 1", len(c.URIs))
			}
			if got, want := c.URIs[0].String(), tt.req.ID.String(); got != want {
				t.Errorf("URI SAN = %q; want %q", got, want)
			}
			if id, err := identity.ParseURI(c.URIs[0]); err != nil || id != tt.req.ID {
				t.Errorf("ParseURI(URI SAN) = %v, %v; want %v", id, err, tt.req.ID)
			}
			if diff := cmp.Diff(tt.req.DNSNames, c.DNSNames); diff != "" {
				t.Errorf("DNS names (-want +got):\n%s", diff)
			}
			if got, want := len(c.IPAddresses), len(tt.req.IPAddresses); got != want {
				t.Errorf("got %d IP addresses; want %d", got, want)
			}
			for i := range min(len(c.IPAddresses), len(tt.req.IPAddresses)) {
				if !c.IPAddresses[i].Equal(tt.req.IPAddresses[i]) {
					t.Errorf("IP address %d = %v; want %v", i, c.IPAddresses[i], tt.req.IPAddresses[i])
				}
			}
			if diff := cmp.Diff(tt.wantUsage, c.ExtKeyUsage); diff != "" {
				t.Errorf("ExtKeyUsage (-want +got):\n%s", diff)
			}
			if got, want := c.KeyUsage, x509.KeyUsageDigitalSignature; got != want {
				t.Errorf("KeyUsage = %v; want %v", got, want)
			}
			if c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("IsCA = %v, BasicConstraintsValid = %v; want false, true", c.IsCA, c.BasicConstraintsValid)
			}
			if got, want := c.NotBefore, testNow.Add(-ClockSkew); !got.Equal(want) {
				t.Errorf("NotBefore = %v; want %v", got, want)
			}
			if got, want := c.NotAfter, testNow.Add(tt.wantTTL); !got.Equal(want) {
				t.Errorf("NotAfter = %v; want %v", got, want)
			}
			if got, want := c.AuthorityKeyId, a.X509CA().SubjectKeyId; len(got) == 0 || string(got) != string(want) {
				t.Errorf("AuthorityKeyId = %x; want %x", got, want)
			}
			if got, want := c.Issuer.CommonName, "prod tunnel CA"; got != want {
				t.Errorf("issuer CN = %q; want %q", got, want)
			}
			if !c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.req.PublicKey) {
				t.Errorf("certificate holds another public key")
			}

			verify := func(now time.Time, usage x509.ExtKeyUsage, dnsName string) error {
				_, err := c.Verify(x509.VerifyOptions{Roots: a.X509Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: dnsName})
				return err
			}
			if err := verify(testNow, x509.ExtKeyUsageClientAuth, ""); err != nil {
				t.Errorf("verify for client auth: %v", err)
			}
			if err := verify(testNow.Add(-ClockSkew), x509.ExtKeyUsageClientAuth, ""); err != nil {
				t.Errorf("verify at NotBefore: %v", err)
			}
			if err := verify(testNow.Add(tt.wantTTL+time.Second), x509.ExtKeyUsageClientAuth, ""); err == nil {
				t.Errorf("verify after NotAfter: got no error; want one")
			}
			if err := verify(testNow.Add(-ClockSkew-time.Second), x509.ExtKeyUsageClientAuth, ""); err == nil {
				t.Errorf("verify before NotBefore: got no error; want one")
			}
			if tt.server {
				if err := verify(testNow, x509.ExtKeyUsageServerAuth, "gw.example.com"); len(tt.req.DNSNames) > 0 && err != nil {
					t.Errorf("verify for server auth: %v", err)
				}
			} else if err := verify(testNow, x509.ExtKeyUsageServerAuth, ""); err == nil {
				t.Errorf("client certificate verified for server auth; want refusal")
			}
		})
	}
}

func TestIssueX509Refused(t *testing.T) { forEachBackend(t, testIssueX509Refused) }

func testIssueX509Refused(t *testing.T, b backend) {
	a := b.authority(t)
	low := b.with(t, Config{MaxTTL: 2 * time.Hour})
	edPub, edPriv := newEd25519(t)
	alice := identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}
	gw := identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gw-1"}

	tests := []struct {
		name    string
		ca      *Authority
		server  bool
		req     X509Request
		want    error
		wantMsg string
	}{
		{name: "wrong cluster", req: X509Request{ID: identity.ID{Cluster: "staging", Kind: identity.User, Name: "alice"}, PublicKey: edPub}, want: ErrInvalidRequest, wantMsg: `cluster "staging"`},
		{name: "bad name", req: X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "Alice/x"}, PublicKey: edPub}, want: identity.ErrInvalidName},
		{name: "unknown kind", req: X509Request{ID: identity.ID{Cluster: "prod", Kind: "robot", Name: "alice"}, PublicKey: edPub}, want: ErrInvalidRequest},
		{name: "empty ID", req: X509Request{PublicKey: edPub}, want: ErrInvalidRequest},
		{name: "RSA key", req: X509Request{ID: alice, PublicKey: &testRSAKey().PublicKey}, want: ErrUnsupportedKey, wantMsg: "RSA keys are not supported"},
		{name: "P-384 key", req: X509Request{ID: alice, PublicKey: &newECDSA(t, elliptic.P384()).PublicKey}, want: ErrUnsupportedKey, wantMsg: "P-384"},
		{name: "ECDSA key without a point", req: X509Request{ID: alice, PublicKey: &ecdsa.PublicKey{Curve: elliptic.P256()}}, want: ErrInvalidRequest},
		{name: "short Ed25519 key", req: X509Request{ID: alice, PublicKey: edPub[:31]}, want: ErrInvalidRequest},
		{name: "no key", req: X509Request{ID: alice}, want: ErrInvalidRequest},
		{name: "private key", req: X509Request{ID: alice, PublicKey: edPriv}, want: ErrInvalidRequest},
		{name: "string as key", req: X509Request{ID: alice, PublicKey: "ssh-ed25519 AAAA"}, want: ErrUnsupportedKey},
		{name: "TTL above role maximum", req: X509Request{ID: alice, PublicKey: edPub, TTL: 2 * time.Hour, MaxTTL: time.Hour}, want: ErrTTLTooLong, wantMsg: "requested TTL 2h0m0s exceeds the role maximum of 1h0m0s"},
		{name: "TTL above cluster maximum", req: X509Request{ID: alice, PublicKey: edPub, TTL: 24 * time.Hour}, want: ErrTTLTooLong, wantMsg: "requested TTL 24h0m0s exceeds the cluster maximum of 12h0m0s"},
		{name: "role maximum above cluster maximum", req: X509Request{ID: alice, PublicKey: edPub, TTL: 13 * time.Hour, MaxTTL: 24 * time.Hour}, want: ErrTTLTooLong, wantMsg: "cluster maximum of 12h0m0s"},
		{name: "TTL above configured cluster maximum", ca: low, req: X509Request{ID: alice, PublicKey: edPub, TTL: 3 * time.Hour}, want: ErrTTLTooLong, wantMsg: "cluster maximum of 2h0m0s"},
		{name: "negative TTL", req: X509Request{ID: alice, PublicKey: edPub, TTL: -time.Minute}, want: ErrInvalidRequest},
		{name: "negative role maximum", req: X509Request{ID: alice, PublicKey: edPub, MaxTTL: -time.Minute}, want: ErrInvalidRequest},
		{name: "client with DNS name", req: X509Request{ID: alice, PublicKey: edPub, DNSNames: []string{"a.example.com"}}, want: ErrInvalidRequest},
		{name: "client with IP", req: X509Request{ID: alice, PublicKey: edPub, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, want: ErrInvalidRequest},
		{name: "server without names", server: true, req: X509Request{ID: gw, PublicKey: edPub}, want: ErrInvalidRequest},
		{name: "server with bad DNS name", server: true, req: X509Request{ID: gw, PublicKey: edPub, DNSNames: []string{"gw example.com"}}, want: ErrInvalidRequest},
		{name: "server with empty DNS label", server: true, req: X509Request{ID: gw, PublicKey: edPub, DNSNames: []string{"gw..example.com"}}, want: ErrInvalidRequest},
		{name: "server with malformed IP", server: true, req: X509Request{ID: gw, PublicKey: edPub, IPAddresses: []net.IP{{1, 2, 3}}}, want: ErrInvalidRequest},
		{name: "server TTL above machine maximum", server: true, req: X509Request{ID: gw, PublicKey: edPub, DNSNames: []string{"gw"}, TTL: MaxMachineTTL + time.Hour}, want: ErrTTLTooLong},
		{name: "agent TTL above machine maximum", req: X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db-1"}, PublicKey: edPub, TTL: MaxMachineTTL + time.Second}, want: ErrTTLTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := a
			if tt.ca != nil {
				ca = tt.ca
			}
			issue := ca.IssueX509Client
			if tt.server {
				issue = ca.IssueX509Server
			}
			c, err := issue(tt.req)
			if c != nil {
				t.Errorf("got a certificate; want none")
			}
			checkErr(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got error %q; want it to contain %q", err, tt.wantMsg)
			}
			if !strings.HasPrefix(err.Error(), "issue X.509 ") {
				t.Errorf("got error %q; want it to name the operation", err)
			}
		})
	}
}

func TestIssueX509CAExpiry(t *testing.T) {
	now := testNow
	a, err := Generate(Config{Cluster: "prod", Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	now = a.X509CA().NotAfter.Add(-30 * time.Minute)
	pub, _ := newEd25519(t)
	_, err = a.IssueX509Client(X509Request{ID: identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, PublicKey: pub})
	if err == nil || !strings.Contains(err.Error(), "rotate the CA") {
		t.Errorf("got error %v; want one asking to rotate the CA", err)
	}
}
