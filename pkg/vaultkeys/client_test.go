package vaultkeys

import (
	"context"
	"crypto/tls"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// waitFor polls cond for up to a generous minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAppRoleRenewAndRelogin: the client logs in with AppRole, renews its
// short-lived token, logs in again when the token reaches its maximum
// lifetime, and keeps signing after the first token has expired.
func TestAppRoleRenewAndRelogin(t *testing.T) {
	srv := startVault(t, false)
	root := srv.Client(t)
	newSigner(t, newClient(t, srv), "ca")
	roleID, secretID := setupAppRole(t, root, "4s", "10s")

	if _, err := New(context.Background(), Config{Addr: srv.Addr, RoleID: roleID, SecretID: "wrong"}); !errors.Is(err, ErrToken) {
		t.Errorf("New with a wrong secret id: %v; want ErrToken", err)
	}
	t.Setenv(EnvToken, srv.Token) // must be ignored with AppRole
	c, err := New(context.Background(), Config{Addr: srv.Addr, RoleID: roleID, SecretID: secretID})
	if err != nil {
		t.Fatalf("New with AppRole: %v", err)
	}
	defer c.Close()
	first := c.API().Token()
	if first == srv.Token || c.Logins() != 1 {
		t.Fatalf("after New: token is the root token %v, logins %d; want an AppRole token, 1", first == srv.Token, c.Logins())
	}
	signer, err := NewSigner(context.Background(), c, "ca")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a token renewal", func() bool { return c.Renewals() >= 1 })
	waitFor(t, "a second AppRole login", func() bool { return c.Logins() >= 2 })
	waitFor(t, "the first token to expire", func() bool {
		_, err := root.Auth().Token().Lookup(first)
		return err != nil
	})
	if _, err := signer.Sign(nil, []byte("m"), nil); err != nil {
		t.Errorf("Sign after the first token expired: %v", err)
	}
	if c.API().Token() == first {
		t.Errorf("the client still uses its first token")
	}
	c.Close()
	c.Close() // twice is fine
	if _, err := signer.Sign(nil, []byte("m"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Sign after Close: %v; want ErrClosed", err)
	}
}

// TestTokenFromEnvironment: VAULT_ADDR and VAULT_TOKEN fill empty fields,
// and a renewable token is renewed.
func TestTokenFromEnvironment(t *testing.T) {
	srv := startVault(t, false)
	tok, err := srv.Client(t).Auth().Token().Create(&vault.TokenCreateRequest{TTL: "4s", ExplicitMaxTTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvAddr, srv.Addr)
	t.Setenv(EnvToken, tok.Auth.ClientToken)
	c, err := New(context.Background(), Config{})
	if err != nil {
		t.Fatalf("New from the environment: %v", err)
	}
	defer c.Close()
	if c.Addr() != srv.Addr || c.API().Token() != tok.Auth.ClientToken {
		t.Errorf("Addr %q token from env %v; want %q, true", c.Addr(), c.API().Token() == tok.Auth.ClientToken, srv.Addr)
	}
	waitFor(t, "a token renewal", func() bool { return c.Renewals() >= 2 })
	if err := c.Health(context.Background()); err != nil {
		t.Errorf("Health after renewals: %v", err)
	}
}

// TestTLS: with the dev server's CA (Config.CACert, or VAULT_CACERT) the
// client connects over verified TLS; without it the certificate is refused
// and the error says Vault cannot be reached.
func TestTLS(t *testing.T) {
	srv := startVault(t, true)
	c := newClient(t, srv) // Config.CACert
	newSigner(t, c, "ca")
	t.Setenv(EnvCACert, srv.CACert)
	c2, err := New(context.Background(), Config{Addr: srv.Addr, Token: srv.Token})
	if err != nil {
		t.Fatalf("New with VAULT_CACERT: %v", err)
	}
	c2.Close()
	// The client's transport negotiates TLS 1.3 with a server that offers it.
	hc, err := httpClient(srv.CACert, DefaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.Addr + "/v1/sys/health")
	if err != nil {
		t.Fatalf("GET sys/health: %v", err)
	}
	resp.Body.Close()
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("TLS state %+v; want TLS 1.3", resp.TLS)
	}
	t.Setenv(EnvCACert, "")
	t.Setenv("VAULT_SKIP_VERIFY", "true") // must be ignored
	_, err = New(context.Background(), Config{Addr: srv.Addr, Token: srv.Token})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("New without the CA: %v; want ErrUnreachable about the certificate", err)
	}
}

// TestConfigRefusals: plain http leaves only loopback, and credentials
// must be complete.
func TestConfigRefusals(t *testing.T) {
	t.Setenv(EnvAddr, "")
	t.Setenv(EnvToken, "")
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Token: "t"}, "no Vault address"},
		{Config{Addr: "http://vault.example:8200", Token: "t"}, "refusing plain http"},
		{Config{Addr: "http://10.0.0.5:8200", Token: "t"}, "refusing plain http"},
		{Config{Addr: "ftp://vault:8200", Token: "t"}, "must start with https://"},
		{Config{Addr: "https://vault:8200"}, "no credentials"},
		{Config{Addr: "https://vault:8200", RoleID: "r"}, "needs both a role id and a secret id"},
		{Config{Addr: "https://vault:8200", Token: "t", RoleID: "r", SecretID: "s"}, "not both"},
	} {
		_, err := New(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v; want %q", tc.cfg, err, tc.want)
		}
	}
	for _, addr := range []string{"http://127.0.0.1:8200", "http://[::1]:8200", "http://localhost:8200", "https://vault.example:8200"} {
		if err := checkAddr(addr, false); err != nil {
			t.Errorf("checkAddr(%s): %v", addr, err)
		}
	}
	if err := checkAddr("http://10.0.0.5:8200", true); err != nil {
		t.Errorf("checkAddr with Insecure: %v", err)
	}
}

// setupAppRole enables AppRole with a role "gateway" that may sign with
// the Transit key "ca", its tokens living ttl and at most maxTTL, and
// returns its role id and a secret id.
func setupAppRole(t *testing.T, root *vault.Client, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	if err := root.Sys().EnableAuthWithOptions("approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("gateway", `path "transit/sign/ca" { capabilities = ["update"] }
path "transit/keys/ca" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/gateway", map[string]any{
		"token_policies": "gateway", "token_ttl": ttl, "token_max_ttl": maxTTL,
	}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/approle/role/gateway/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/approle/role/gateway/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return rid.Data["role_id"].(string), sid.Data["secret_id"].(string)
}

// TestAppRoleRecoversAfterSeal: Vault is sealed while the AppRole token
// reaches its maximum lifetime; signing is refused with ErrSealed
// meanwhile, and once Vault is unsealed the client logs in again by itself
// and signing works, with nothing done to the client.
func TestAppRoleRecoversAfterSeal(t *testing.T) {
	srv := startVault(t, false)
	root := srv.Client(t)
	newSigner(t, newClient(t, srv), "ca")
	roleID, secretID := setupAppRole(t, root, "3s", "6s")
	c, err := New(context.Background(), Config{Addr: srv.Addr, RoleID: roleID, SecretID: secretID})
	if err != nil {
		t.Fatalf("New with AppRole: %v", err)
	}
	defer c.Close()
	signer, err := NewSigner(context.Background(), c, "ca")
	if err != nil {
		t.Fatal(err)
	}
	loggedIn := time.Now()
	if err := root.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	if _, err := signer.Sign(nil, []byte("m"), nil); !errors.Is(err, ErrSealed) {
		t.Errorf("Sign with Vault sealed: %v; want ErrSealed", err)
	}
	// Stay sealed until the token is past its maximum lifetime.
	time.Sleep(time.Until(loggedIn.Add(8 * time.Second)))
	srv.Unseal(t)
	var last error
	waitFor(t, "signing to work again after unseal", func() bool {
		_, last = signer.Sign(nil, []byte("m"), nil)
		return last == nil
	})
	if c.Logins() < 2 {
		t.Errorf("Logins() = %d after recovery; want at least 2 (a new login)", c.Logins())
	}
}

// TestCloseStopsGoroutines: after Close, the renewal goroutine and the
// LifetimeWatcher are gone.
func TestCloseStopsGoroutines(t *testing.T) {
	srv := startVault(t, false)
	tok, err := srv.Client(t).Auth().Token().Create(&vault.TokenCreateRequest{TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(context.Background(), Config{Addr: srv.Addr, Token: tok.Auth.ClientToken})
	if err != nil {
		t.Fatal(err)
	}
	// The renewal goroutine and the watcher must be seen running first, or
	// the check below would prove nothing.
	waitFor(t, "the renewal goroutine to run", func() bool {
		st := allStacks()
		return strings.Contains(st, "vaultkeys.(*Client).keepAlive") && strings.Contains(st, "(*LifetimeWatcher).Start")
	})
	c.Close()
	c.Close()
	for _, fn := range []string{"vaultkeys.(*Client).keepAlive", "vaultkeys.(*Client).watch", "(*LifetimeWatcher).Start"} {
		if st := allStacks(); strings.Contains(st, fn) {
			t.Errorf("%s still runs after Close:\n%s", fn, st)
		}
	}
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
