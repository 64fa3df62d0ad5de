package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
)

// BenchmarkLoginHTTPS measures a whole login as `tunnel login` does it,
// against the real gateway binary: a new key pair and CSR, a new TLS 1.3
// connection pinned to the CA, argon2id (m=19 MiB, t=2, p=1), TOTP with the
// replay guard, two signatures, and the store and audit writes. Each
// iteration logs in a different user, so no code is a replay. Reports p50
// and p99 latency.
func BenchmarkLoginHTTPS(b *testing.B) {
	c := startCluster(b, "--login-burst", "100000", "--login-rate", "100000", "--log-level", "info")
	admin := adminClient(b, c)
	defer admin.Close()

	type cred struct{ name, secret string }
	creds := make([]cred, 0, b.N)
	ctx := context.Background()
	for i := range b.N {
		name := fmt.Sprintf("bench%d", i)
		var enr api.Enrollment
		err := admin.Do(ctx, http.MethodPost, api.PathUsers, nil,
			api.CreateUserRequest{Name: name, Password: "benchmark-password"}, &enr)
		if err != nil {
			b.Fatalf("create user: %v", err)
		}
		creds = append(creds, cred{name, enr.Secret})
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		cl, err := apiclient.New(apiclient.Config{Gateway: c.addr, Pin: c.pin})
		if err != nil {
			b.Fatal(err)
		}
		key, err := profile.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		csr, _ := key.CSR(creds[i].name)
		code, _ := totp.GenerateCode(creds[i].secret, time.Now())
		var resp api.LoginResponse
		err = cl.Do(ctx, http.MethodPost, api.PathLogin, nil, api.LoginRequest{
			User: creds[i].name, Password: "benchmark-password", OTP: code, CSR: csr,
			SSHPublicKey: strings.TrimSpace(string(sshAuthorizedKey(key))),
		}, &resp)
		cl.Close()
		if err != nil {
			b.Fatalf("login %d: %v", i, err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}

// adminClient logs the cluster's admin in with the CLI and returns an API
// client holding the admin's certificate.
func adminClient(b *testing.B, c *cluster) *apiclient.Client {
	b.Helper()
	a := c.adminUser()
	a.login()
	cert, err := profile.Dir{Path: a.home}.TLSCertificate()
	if err != nil {
		b.Fatal(err)
	}
	cl, err := apiclient.New(apiclient.Config{Gateway: c.addr, Pin: c.pin, Cert: &cert})
	if err != nil {
		b.Fatal(err)
	}
	return cl
}

func sshAuthorizedKey(k *profile.Key) []byte { return ssh.MarshalAuthorizedKey(k.SSH) }
