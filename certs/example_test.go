package certs_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
)

// Example makes a cluster CA and signs a user's SSH key for one session.
func Example() {
	ca, err := certs.Generate(certs.Config{Cluster: "prod"})
	if err != nil {
		log.Fatal(err)
	}

	// The client makes its key pair and sends only the public half, as an
	// authorized_keys line.
	clientPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		log.Fatal(err)
	}
	line := ssh.MarshalAuthorizedKey(sshPub)

	// The gateway parses the untrusted line and signs it.
	pub, err := certs.ParseSSHPublicKey(line)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := ca.IssueSSHUser(certs.SSHUserRequest{
		User:       "alice",
		Principals: []string{"alice", "deploy"},
		PublicKey:  pub,
		TTL:        30 * time.Minute,
		SessionID:  "s-42",
	})
	if err != nil {
		log.Fatal(err)
	}

	// An SSH server trusts the user CA.
	checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
		return string(k.Marshal()) == string(ca.SSHUserCA().Marshal())
	}}
	fmt.Println("principals:", cert.ValidPrincipals)
	fmt.Println("valid for:", time.Duration(cert.ValidBefore-cert.ValidAfter)*time.Second-certs.ClockSkew)
	fmt.Println("login as deploy:", checker.CheckCert("deploy", cert) == nil)
	fmt.Println("login as root:", checker.CheckCert("root", cert) == nil)
	// Output:
	// principals: [alice deploy]
	// valid for: 30m0s
	// login as deploy: true
	// login as root: false
}
