package certs

import (
	"bytes"
	"crypto/elliptic"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/sshcert"
)

func TestIssueSSHUser(t *testing.T) { forEachBackend(t, testIssueSSHUser) }

func testIssueSSHUser(t *testing.T, b backend) {
	a := b.authority(t)
	edPub, _ := newEd25519(t)
	edKey := newSSHKey(t, edPub)
	ecKey := newSSHKey(t, &newECDSA(t, elliptic.P256()).PublicKey)
	defaultExt := map[string]string{"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "", "permit-user-rc": ""}

	tests := []struct {
		name           string
		req            SSHUserRequest
		wantPrincipals []string
		wantKeyID      string // %x is the serial
		wantTTL        time.Duration
		wantOptions    map[string]string
		wantExtensions map[string]string
	}{
		{
			name:           "defaults",
			req:            SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: edKey},
			wantPrincipals: []string{"alice"},
			wantKeyID:      "user=alice serial=%x",
			wantTTL:        DefaultUserTTL,
			wantOptions:    map[string]string{},
			wantExtensions: defaultExt,
		},
		{
			name: "everything",
			req: SSHUserRequest{
				User:            "alice",
				Principals:      []string{"alice", "root", "alice", "deploy", "root"},
				PublicKey:       ecKey,
				TTL:             2 * time.Hour,
				MaxTTL:          4 * time.Hour,
				SourceAddresses: []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "2001:DB8::1"},
				SessionID:       "s-0123abcd",
			},
			wantPrincipals: []string{"alice", "root", "deploy"},
			wantKeyID:      "user=alice serial=%x session=s-0123abcd",
			wantTTL:        2 * time.Hour,
			wantOptions:    map[string]string{"source-address": "10.0.0.0/8,192.0.2.1,2001:db8::/32,2001:db8::1"},
			wantExtensions: defaultExt,
		},
		{
			name:           "X11 only",
			req:            SSHUserRequest{User: "bob", Principals: []string{"bob"}, PublicKey: edKey, Permissions: &SSHPermissions{X11Forwarding: true}},
			wantPrincipals: []string{"bob"},
			wantKeyID:      "user=bob serial=%x",
			wantTTL:        DefaultUserTTL,
			wantOptions:    map[string]string{},
			wantExtensions: map[string]string{"permit-X11-forwarding": ""},
		},
		{
			name:           "no permissions",
			req:            SSHUserRequest{User: "bob", Principals: []string{"bob"}, PublicKey: edKey, Permissions: &SSHPermissions{}, TTL: ClusterMaxTTL},
			wantPrincipals: []string{"bob"},
			wantKeyID:      "user=bob serial=%x",
			wantTTL:        ClusterMaxTTL,
			wantOptions:    map[string]string{},
			wantExtensions: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.IssueSSHUser(tt.req)
			if err != nil {
				t.Fatalf("IssueSSHUser: %v", err)
			}
			if got, want := c.CertType, uint32(ssh.UserCert); got != want {
				t.Errorf("CertType = %d; want %d", got, want)
			}
			if diff := cmp.Diff(tt.wantPrincipals, c.ValidPrincipals); diff != "" {
				t.Errorf("principals (-want +got):\n%s", diff)
			}
			if c.Serial == 0 {
				t.Errorf("Serial = 0; want random non-zero")
			}
			if got, want := c.KeyId, fmt.Sprintf(tt.wantKeyID, c.Serial); got != want {
				t.Errorf("KeyId = %q; want %q", got, want)
			}
			if id, err := sshcert.Parse(c.KeyId); err != nil || id.User != tt.req.User || id.Serial != SSHSerialHex(c) || id.Session != tt.req.SessionID {
				t.Errorf("sshcert.Parse(%q) = %+v, %v; want the request's user and session and the serial", c.KeyId, id, err)
			}
			if got, want := c.ValidAfter, uint64(testNow.Add(-ClockSkew).Unix()); got != want {
				t.Errorf("ValidAfter = %d; want %d", got, want)
			}
			if got, want := c.ValidBefore, uint64(testNow.Add(tt.wantTTL).Unix()); got != want {
				t.Errorf("ValidBefore = %d; want %d", got, want)
			}
			if diff := cmp.Diff(tt.wantOptions, c.CriticalOptions); diff != "" {
				t.Errorf("critical options (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantExtensions, c.Extensions); diff != "" {
				t.Errorf("extensions (-want +got):\n%s", diff)
			}
			if !bytes.Equal(c.Key.Marshal(), tt.req.PublicKey.Marshal()) {
				t.Errorf("certificate holds another key")
			}
			if !isKey(a.SSHUserCA())(c.SignatureKey) {
				t.Errorf("certificate not signed by the user CA")
			}

			// The certificate survives its wire form.
			parsed, err := ssh.ParsePublicKey(c.Marshal())
			if err != nil {
				t.Fatalf("parse the marshalled certificate: %v", err)
			}
			c = parsed.(*ssh.Certificate)

			check := func(now time.Time, principal string) error {
				checker := ssh.CertChecker{
					IsUserAuthority:          isKey(a.SSHUserCA()),
					SupportedCriticalOptions: []string{"source-address"},
					Clock:                    fixedClock(now),
				}
				return checker.CheckCert(principal, c)
			}
			for _, p := range tt.wantPrincipals {
				if err := check(testNow, p); err != nil {
					t.Errorf("check for %q now: %v", p, err)
				}
			}
			if err := check(testNow.Add(-ClockSkew), tt.wantPrincipals[0]); err != nil {
				t.Errorf("check at valid_after: %v", err)
			}
			if err := check(testNow.Add(tt.wantTTL-time.Second), tt.wantPrincipals[0]); err != nil {
				t.Errorf("check just before valid_before: %v", err)
			}
			if err := check(testNow.Add(tt.wantTTL), tt.wantPrincipals[0]); err == nil {
				t.Errorf("check at valid_before: got no error; want expiry")
			}
			if err := check(testNow.Add(-ClockSkew-time.Second), tt.wantPrincipals[0]); err == nil {
				t.Errorf("check before valid_after: got no error; want refusal")
			}
			if err := check(testNow, "mallory"); err == nil {
				t.Errorf("check for a principal not listed: got no error; want refusal")
			}
			hostChecker := ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return true }, Clock: fixedClock(testNow)}
			if err := hostChecker.CheckHostKey(tt.wantPrincipals[0]+":22", nil, c); err == nil {
				t.Errorf("user certificate accepted as a host certificate")
			}
		})
	}
}

// TestIssueSSHUserSourceAddress checks that x/crypto/ssh's
// CertChecker.Authenticate accepts a certificate with the source-address
// option and hands the option on, for the server to enforce.
func TestIssueSSHUserSourceAddress(t *testing.T) { forEachBackend(t, testIssueSSHUserSourceAddress) }

func testIssueSSHUserSourceAddress(t *testing.T, b backend) {
	a := b.authority(t)
	pub, _ := newEd25519(t)
	c, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: newSSHKey(t, pub), SourceAddresses: []string{"10.1.0.0/16", "192.0.2.7"}})
	if err != nil {
		t.Fatal(err)
	}
	checker := &ssh.CertChecker{IsUserAuthority: isKey(a.SSHUserCA()), Clock: fixedClock(testNow)}
	perms, err := checker.Authenticate(connMeta{user: "alice"}, c)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if got, want := perms.CriticalOptions["source-address"], "10.1.0.0/16,192.0.2.7"; got != want {
		t.Errorf("source-address = %q; want %q", got, want)
	}
}

type connMeta struct {
	ssh.ConnMetadata
	user string
}

func (c connMeta) User() string          { return c.user }
func (c connMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5000} }
func (c connMeta) SessionID() []byte     { return nil }
func (c connMeta) ClientVersion() []byte { return nil }

func TestIssueSSHUserRefused(t *testing.T) { forEachBackend(t, testIssueSSHUserRefused) }

func testIssueSSHUserRefused(t *testing.T, b backend) {
	a := b.authority(t)
	edPub, _ := newEd25519(t)
	key := newSSHKey(t, edPub)
	rsaKey := newSSHKey(t, &testRSAKey().PublicKey)
	p384Key := newSSHKey(t, &newECDSA(t, elliptic.P384()).PublicKey)
	cert, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ok := SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: key}
	with := func(f func(*SSHUserRequest)) SSHUserRequest {
		r := ok
		f(&r)
		return r
	}

	tests := []struct {
		name    string
		req     SSHUserRequest
		want    error
		wantMsg string
	}{
		{"no principals", with(func(r *SSHUserRequest) { r.Principals = nil }), ErrNoPrincipals, "at least one principal"},
		{"empty principal list", with(func(r *SSHUserRequest) { r.Principals = []string{} }), ErrNoPrincipals, ""},
		{"empty principal", with(func(r *SSHUserRequest) { r.Principals = []string{"alice", ""} }), ErrInvalidRequest, "empty principal"},
		{"comma in principal", with(func(r *SSHUserRequest) { r.Principals = []string{"alice,root"} }), ErrInvalidRequest, "commas"},
		{"space in principal", with(func(r *SSHUserRequest) { r.Principals = []string{"alice root"} }), ErrInvalidRequest, ""},
		{"newline in principal", with(func(r *SSHUserRequest) { r.Principals = []string{"alice\n"} }), ErrInvalidRequest, ""},
		{"NUL in principal", with(func(r *SSHUserRequest) { r.Principals = []string{"al\x00ice"} }), ErrInvalidRequest, ""},
		{"invalid UTF-8 principal", with(func(r *SSHUserRequest) { r.Principals = []string{"al\xffice"} }), ErrInvalidRequest, ""},
		{"long principal", with(func(r *SSHUserRequest) { r.Principals = []string{strings.Repeat("a", 65)} }), ErrInvalidRequest, "longer than 64"},
		{"no user", with(func(r *SSHUserRequest) { r.User = "" }), ErrInvalidRequest, ""},
		{"bad user", with(func(r *SSHUserRequest) { r.User = "Alice Smith" }), ErrInvalidRequest, ""},
		{"no key", with(func(r *SSHUserRequest) { r.PublicKey = nil }), ErrInvalidRequest, "no public key"},
		{"RSA key", with(func(r *SSHUserRequest) { r.PublicKey = rsaKey }), ErrUnsupportedKey, `"ssh-rsa" keys are not supported`},
		{"P-384 key", with(func(r *SSHUserRequest) { r.PublicKey = p384Key }), ErrUnsupportedKey, "nistp384"},
		{"certificate as key", with(func(r *SSHUserRequest) { r.PublicKey = cert }), ErrUnsupportedKey, "certificate"},
		{"TTL above role maximum", with(func(r *SSHUserRequest) { r.TTL, r.MaxTTL = 2*time.Hour, time.Hour }), ErrTTLTooLong, "requested TTL 2h0m0s exceeds the role maximum of 1h0m0s"},
		{"TTL above cluster maximum", with(func(r *SSHUserRequest) { r.TTL = 24 * time.Hour }), ErrTTLTooLong, "requested TTL 24h0m0s exceeds the cluster maximum of 12h0m0s"},
		{"negative TTL", with(func(r *SSHUserRequest) { r.TTL = -time.Second }), ErrInvalidRequest, "negative"},
		{"bad source address", with(func(r *SSHUserRequest) { r.SourceAddresses = []string{"not-an-ip"} }), ErrInvalidRequest, "not-an-ip"},
		{"bad prefix length", with(func(r *SSHUserRequest) { r.SourceAddresses = []string{"10.0.0.0/33"} }), ErrInvalidRequest, ""},
		{"host bits set", with(func(r *SSHUserRequest) { r.SourceAddresses = []string{"10.0.0.1/8"} }), ErrInvalidRequest, "did you mean 10.0.0.0/8"},
		{"zone in address", with(func(r *SSHUserRequest) { r.SourceAddresses = []string{"fe80::1%eth0"} }), ErrInvalidRequest, ""},
		{"empty source address", with(func(r *SSHUserRequest) { r.SourceAddresses = []string{"10.0.0.1", ""} }), ErrInvalidRequest, ""},
		{"comma list as one address", with(func(r *SSHUserRequest) { r.SourceAddresses = []string{"10.0.0.1,0.0.0.0/0"} }), ErrInvalidRequest, ""},
		{"space in session id", with(func(r *SSHUserRequest) { r.SessionID = "s 1 user=root" }), ErrInvalidRequest, "session id"},
		{"long session id", with(func(r *SSHUserRequest) { r.SessionID = strings.Repeat("s", 129) }), ErrInvalidRequest, "session id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.IssueSSHUser(tt.req)
			if c != nil {
				t.Errorf("got a certificate; want none")
			}
			checkErr(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got error %q; want it to contain %q", err, tt.wantMsg)
			}
			if !strings.HasPrefix(err.Error(), "issue SSH user certificate") {
				t.Errorf("got error %q; want it to name the operation", err)
			}
		})
	}
}

func TestIssueSSHHost(t *testing.T) { forEachBackend(t, testIssueSSHHost) }

func testIssueSSHHost(t *testing.T, b backend) {
	a := b.authority(t)
	edPub, _ := newEd25519(t)
	key := newSSHKey(t, edPub)
	tests := []struct {
		name    string
		req     SSHHostRequest
		wantTTL time.Duration
	}{
		{"default TTL", SSHHostRequest{Host: "db1", Principals: []string{"db1.example.com", "db1", "10.1.2.3"}, PublicKey: key}, DefaultHostTTL},
		{"above the user maximum", SSHHostRequest{Host: "db1", Principals: []string{"db1"}, PublicKey: key, TTL: 24 * time.Hour}, 24 * time.Hour},
		{"host maximum", SSHHostRequest{Host: "db1", Principals: []string{"db1"}, PublicKey: newSSHKey(t, &newECDSA(t, elliptic.P256()).PublicKey), TTL: MaxHostTTL}, MaxHostTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.IssueSSHHost(tt.req)
			if err != nil {
				t.Fatalf("IssueSSHHost: %v", err)
			}
			if got, want := c.CertType, uint32(ssh.HostCert); got != want {
				t.Errorf("CertType = %d; want %d", got, want)
			}
			if diff := cmp.Diff(tt.req.Principals, c.ValidPrincipals); diff != "" {
				t.Errorf("principals (-want +got):\n%s", diff)
			}
			if got, want := c.KeyId, fmt.Sprintf("host=%s serial=%x", tt.req.Host, c.Serial); got != want {
				t.Errorf("KeyId = %q; want %q", got, want)
			}
			if got, want := c.ValidAfter, uint64(testNow.Add(-ClockSkew).Unix()); got != want {
				t.Errorf("ValidAfter = %d; want %d", got, want)
			}
			if got, want := c.ValidBefore, uint64(testNow.Add(tt.wantTTL).Unix()); got != want {
				t.Errorf("ValidBefore = %d; want %d", got, want)
			}
			if len(c.CriticalOptions) != 0 || len(c.Extensions) != 0 {
				t.Errorf("options %v, extensions %v; want none", c.CriticalOptions, c.Extensions)
			}
			check := func(now time.Time, addr string) error {
				checker := ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return isKey(a.SSHHostCA())(k) }, Clock: fixedClock(now)}
				return checker.CheckHostKey(addr, nil, c)
			}
			for _, p := range tt.req.Principals {
				if err := check(testNow, net.JoinHostPort(p, "22")); err != nil {
					t.Errorf("check %s now: %v", p, err)
				}
			}
			addr := net.JoinHostPort(tt.req.Principals[0], "22")
			if err := check(testNow.Add(tt.wantTTL), addr); err == nil {
				t.Errorf("check at valid_before: got no error; want expiry")
			}
			if err := check(testNow.Add(-2*ClockSkew), addr); err == nil {
				t.Errorf("check before valid_after: got no error; want refusal")
			}
			if err := check(testNow, "other.example.com:22"); err == nil {
				t.Errorf("check for another host: got no error; want refusal")
			}
			userChecker := ssh.CertChecker{IsUserAuthority: func(ssh.PublicKey) bool { return true }, Clock: fixedClock(testNow)}
			if _, err := userChecker.Authenticate(connMeta{user: tt.req.Principals[0]}, c); err == nil {
				t.Errorf("host certificate accepted as a user certificate")
			}
			// Signed by the host CA, not the user CA.
			if !isKey(a.SSHHostCA())(c.SignatureKey) || isKey(a.SSHUserCA())(c.SignatureKey) {
				t.Errorf("host certificate not signed by the host CA alone")
			}
		})
	}
}

func TestIssueSSHHostRefused(t *testing.T) { forEachBackend(t, testIssueSSHHostRefused) }

func testIssueSSHHostRefused(t *testing.T, b backend) {
	a := b.authority(t)
	edPub, _ := newEd25519(t)
	key := newSSHKey(t, edPub)
	tests := []struct {
		name string
		req  SSHHostRequest
		want error
	}{
		{"no principals", SSHHostRequest{Host: "db1", PublicKey: key}, ErrNoPrincipals},
		{"bad principal", SSHHostRequest{Host: "db1", Principals: []string{"db1,*"}, PublicKey: key}, ErrInvalidRequest},
		{"bad host", SSHHostRequest{Host: "", Principals: []string{"db1"}, PublicKey: key}, ErrInvalidRequest},
		{"TTL above host maximum", SSHHostRequest{Host: "db1", Principals: []string{"db1"}, PublicKey: key, TTL: MaxHostTTL + time.Hour}, ErrTTLTooLong},
		{"negative TTL", SSHHostRequest{Host: "db1", Principals: []string{"db1"}, PublicKey: key, TTL: -1}, ErrInvalidRequest},
		{"RSA key", SSHHostRequest{Host: "db1", Principals: []string{"db1"}, PublicKey: newSSHKey(t, &testRSAKey().PublicKey)}, ErrUnsupportedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.IssueSSHHost(tt.req)
			if c != nil {
				t.Errorf("got a certificate; want none")
			}
			checkErr(t, err, tt.want)
		})
	}
}
