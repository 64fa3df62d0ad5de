package vaultkeys

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"time"

	"errors"
	"golang.org/x/crypto/ssh"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

// TestVaultSealedThenUnsealed: with Vault sealed, signing and opening fail
// with ErrSealed and the sentence that says so (not seal.ErrOpen); once it
// is unsealed the same Signer and Sealer work again without any action.
func TestVaultSealedThenUnsealed(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	signer := newSigner(t, c, "ca")
	sealer := newSealer(t, c, "kek")
	sealed, err := sealer.Seal([]byte("x"), "l")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Client(t).Sys().Seal(); err != nil {
		t.Fatalf("seal Vault: %v", err)
	}
	_, err = signer.Sign(nil, []byte("m"), nil)
	want := "Vault at " + srv.Addr + " is sealed: unseal it (vault operator unseal) and the gateway carries on by itself"
	if !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), want) {
		t.Errorf("Sign with Vault sealed: %v; want ErrSealed saying %q", err, want)
	}
	// The kind survives crypto/x509 and x/crypto/ssh, which return the
	// signer's error: a caller of certs can still tell.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}
	if _, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer); !errors.Is(err, ErrSealed) {
		t.Errorf("x509.CreateCertificate with Vault sealed: %v; want ErrSealed", err)
	}
	sshSigner, _ := ssh.NewSignerFromSigner(signer)
	cert := &ssh.Certificate{Key: sshSigner.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"a"}}
	if err := cert.SignCert(rand.Reader, sshSigner); !errors.Is(err, ErrSealed) {
		t.Errorf("ssh SignCert with Vault sealed: %v; want ErrSealed", err)
	}
	if _, err := sealer.Open(sealed, "l"); !errors.Is(err, ErrSealed) || errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open with Vault sealed: %v; want ErrSealed and not seal.ErrOpen", err)
	}
	if err := c.Health(context.Background()); !errors.Is(err, ErrSealed) {
		t.Errorf("Health with Vault sealed: %v; want ErrSealed", err)
	}
	srv.Unseal(t)
	if _, err := signer.Sign(nil, []byte("m"), nil); err != nil {
		t.Errorf("Sign after unseal: %v", err)
	}
	if got, err := sealer.Open(sealed, "l"); err != nil || string(got) != "x" {
		t.Errorf("Open after unseal = %q, %v", got, err)
	}
}

// TestVaultUnreachable: with Vault stopped, signing and opening fail with
// ErrUnreachable naming the address.
func TestVaultUnreachable(t *testing.T) {
	srv := startVault(t, false)
	c := newClient(t, srv)
	signer := newSigner(t, c, "ca")
	sealer := newSealer(t, c, "kek")
	sealed, _ := sealer.Seal([]byte("x"), "l")
	srv.Stop()
	_, err := signer.Sign(nil, []byte("m"), nil)
	want := "Vault at " + srv.Addr + " cannot be reached: "
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Sign with Vault stopped: %v; want ErrUnreachable saying %q… connection refused", err, want)
	}
	if _, err := sealer.Open(sealed, "l"); !errors.Is(err, ErrUnreachable) || errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open with Vault stopped: %v; want ErrUnreachable and not seal.ErrOpen", err)
	}
	if _, err := New(context.Background(), Config{Addr: srv.Addr, Token: srv.Token}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("New with Vault stopped: %v; want ErrUnreachable", err)
	}
}

// TestTokenRevoked: a revoked token is ErrToken with its sentence; a valid
// token whose policy does not allow signing is ErrPermission instead.
func TestTokenRevoked(t *testing.T) {
	srv := startVault(t, false)
	root := srv.Client(t)
	admin := newClient(t, srv)
	newSigner(t, admin, "ca")
	if err := root.Sys().PutPolicy("signer", `path "transit/sign/ca" { capabilities = ["update"] }
path "transit/keys/ca" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{"signer"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(context.Background(), Config{Addr: srv.Addr, Token: tok.Auth.ClientToken})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer c.Close()
	signer, err := NewSigner(context.Background(), c, "ca")
	if err != nil {
		t.Fatalf("NewSigner with the signer policy: %v", err)
	}
	if _, err := signer.Sign(nil, []byte("m"), nil); err != nil {
		t.Fatalf("Sign with a valid token: %v", err)
	}
	if _, err := c.EnsureKey(context.Background(), "other", KeyEd25519); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("EnsureKey outside the policy: %v; want ErrPermission", err)
	}
	if err := root.Auth().Token().RevokeTree(tok.Auth.ClientToken); err != nil {
		t.Fatal(err)
	}
	_, err = signer.Sign(nil, []byte("m"), nil)
	if !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), "the Vault token was refused (expired or revoked): ") {
		t.Errorf("Sign with a revoked token: %v; want ErrToken", err)
	}
	if err := c.Health(context.Background()); !errors.Is(err, ErrToken) {
		t.Errorf("Health with a revoked token: %v; want ErrToken", err)
	}
	if _, err := New(context.Background(), Config{Addr: srv.Addr, Token: tok.Auth.ClientToken}); !errors.Is(err, ErrToken) {
		t.Errorf("New with a revoked token: %v; want ErrToken", err)
	}
}

// TestErrorMessages pins the sentences of each kind.
func TestErrorMessages(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:8200: i/o timeout")
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{&Error{Kind: ErrUnreachable, Addr: "https://v:8200", Err: cause}, "Vault at https://v:8200 cannot be reached: dial tcp 10.0.0.1:8200: i/o timeout"},
		{&Error{Kind: ErrSealed, Addr: "https://v:8200"}, "Vault at https://v:8200 is sealed: unseal it (vault operator unseal) and the gateway carries on by itself"},
		{&Error{Kind: ErrToken, Addr: "https://v:8200", Err: cause}, "the Vault token was refused (expired or revoked): dial tcp 10.0.0.1:8200: i/o timeout; give a valid token or AppRole credentials"},
		{&Error{Kind: ErrKeyMissing, Addr: "https://v:8200", Path: "transit/sign/ca", Key: "ca"}, `Vault at https://v:8200 has no Transit key "ca" (transit/sign/ca): create it (tunnel-gateway init --vault-addr creates the cluster's keys)`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got %q; want %q", got, tc.want)
		}
		if !errors.Is(tc.err, tc.err.Kind) {
			t.Errorf("errors.Is(%v, its kind) is false", tc.err)
		}
		for _, other := range []error{ErrUnreachable, ErrSealed, ErrToken, ErrKeyMissing, ErrPermission} {
			if other != tc.err.Kind && errors.Is(tc.err, other) {
				t.Errorf("%v matches %v too", tc.err, other)
			}
		}
	}
}
