package jumphost

import (
	"strconv"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestEndCertsClosesByCertificate: EndCerts closes the jump connection
// authenticated with a revoked SSH login certificate (a revocation made
// on another gateway), and leaves alone the same user's connection with
// another certificate and an X.509 certificate of the same serial.
func TestEndCertsClosesByCertificate(t *testing.T) {
	e := newEnv(t)
	held, heldCert := e.login("bob")
	other, _ := e.login("bob")
	serial := func(c *gossh.Certificate) string { return strconv.FormatUint(c.Serial, 16) }

	if n := e.jump.EndCerts([]store.IssuedCert{{Kind: store.CertX509, Serial: serial(heldCert), Subject: "bob"}}); n != 0 {
		t.Errorf("an X.509 certificate with the login certificate's serial revoked %d jump connections; want 0", n)
	}
	if n := e.jump.EndCerts([]store.IssuedCert{{Kind: store.CertSSHUser, Serial: serial(heldCert), Subject: "bob"}}); n != 1 {
		t.Errorf("EndCerts revoked %d jump connections; want 1", n)
	}
	waitClosed(t, held, "its certificate was revoked")
	if err := echoThrough(other, "web-1:22"); err != nil {
		t.Errorf("bob's connection with his other certificate: %v", err)
	}
}
