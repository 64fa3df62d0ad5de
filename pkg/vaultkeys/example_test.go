package vaultkeys_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
)

// Example shows the gateway's use: log in with AppRole, make sure the CA
// key and the KEK exist, sign an SSH certificate through Vault and seal a
// secret with the Transit KEK. (It needs a Vault, so it is not run.)
func Example() {
	ctx := context.Background()
	c, err := vaultkeys.New(ctx, vaultkeys.Config{
		Addr:   "https://vault.internal:8200",
		RoleID: "…", SecretID: "…", // or Token, or VAULT_TOKEN
		CACert: "/etc/tunnel/vault-ca.pem",
	})
	if err != nil {
		log.Fatal(err) // e.g. "Vault at https://vault.internal:8200 is sealed: unseal it …"
	}
	defer c.Close()

	// At tunnel-gateway init:
	if _, err := c.EnsureKey(ctx, "tunnel-prod-ssh-user-ca", vaultkeys.KeyEd25519); err != nil {
		log.Fatal(err)
	}
	if _, err := c.EnsureKey(ctx, "tunnel-prod-kek", vaultkeys.KeyKEK); err != nil {
		log.Fatal(err)
	}

	ca, err := vaultkeys.NewSigner(ctx, c, "tunnel-prod-ssh-user-ca")
	if err != nil {
		log.Fatal(err)
	}
	caSigner, _ := ssh.NewSignerFromSigner(ca) // ca is a crypto.Signer
	cert := &ssh.Certificate{Key: caSigner.PublicKey(), CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"}}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		log.Fatal(err)
	}
	fmt.Println("signed by", ca.Describe()) // "vault key tunnel-prod-ssh-user-ca version 1"

	kek, err := vaultkeys.NewSealer(ctx, c, "tunnel-prod-kek") // a seal.Sealer
	if err != nil {
		log.Fatal(err)
	}
	sealed, err := kek.Seal([]byte("JBSWY3DPEHPK3PXP"), "totp/alice")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%.9s…\n", sealed) // "vault:v1:…"
}
