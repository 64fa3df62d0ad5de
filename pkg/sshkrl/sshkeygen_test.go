package sshkrl

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// signCert writes an Ed25519 user certificate with serial and key id,
// signed by ca, to a file and returns its path.
func signCert(t *testing.T, ca ssh.Signer, serial uint64, keyID string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := &ssh.Certificate{Key: sshPub, Serial: serial, CertType: ssh.UserCert, KeyId: keyID,
		ValidPrincipals: []string{"alice"}, ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%d-cert.pub", serial))
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(c), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// query runs `ssh-keygen -Q -f krl cert` and reports whether it says the
// certificate is revoked (exit 1, "REVOKED") or not (exit 0, "ok").
func query(t *testing.T, keygen, krl, cert string) bool {
	t.Helper()
	out, err := exec.Command(keygen, "-Q", "-f", krl, cert).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil && strings.HasSuffix(strings.TrimSpace(string(out)), ": ok"):
		return false
	case errors.As(err, &ee) && ee.ExitCode() == 1 && strings.HasSuffix(strings.TrimSpace(string(out)), ": REVOKED"):
		return true
	}
	t.Fatalf("ssh-keygen -Q -f %s %s: %v\n%s", krl, cert, err, out)
	return false
}

// TestSSHKeygenQuery: the real ssh-keygen reads our KRL and reports the
// certificates it revokes — by a listed serial, a range, a bitmap or a
// key id — as revoked, and live ones (other serials, the same serial
// under another CA) as not.
func TestSSHKeygenQuery(t *testing.T) {
	keygen := testenv.LookPath(t, "ssh-keygen")
	ca, caPub := testCA(t, 1)
	other, _ := testCA(t, 2)
	var dense []uint64
	for v := uint64(1000); v < 1300; v += 3 {
		dense = append(dense, v)
	}
	k := &KRL{Version: 5, GeneratedDate: uint64(time.Now().Unix()), Comment: "tunnel test",
		Sections: []CertSection{{CA: caPub, Serials: append(Serials(append(dense, 0x8000000000000001, 77)...), Range{500, 600}),
			KeyIDs: []string{"mallory"}}}}
	b, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	used := map[byte]bool{}
	for _, r := range plan(normalize(k.Sections[0].Serials)) {
		used[r.kind] = true
	}
	if !used[certSerialList] || !used[certSerialRange] || !used[certSerialBitmap] {
		t.Fatalf("the test KRL should use every serial encoding: %v", used)
	}
	krl := filepath.Join(t.TempDir(), "revoked_keys")
	if err := os.WriteFile(krl, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ca      ssh.Signer
		serial  uint64
		keyID   string
		revoked bool
	}{
		{ca, 77, "a", true},                  // listed
		{ca, 0x8000000000000001, "a", true},  // listed, high bit
		{ca, 550, "a", true},                 // in a range
		{ca, 1003, "a", true},                // in a bitmap
		{ca, 1004, "a", false},               // a gap of the bitmap
		{ca, 601, "a", false},                // past the range
		{ca, 78, "a", false},                 // live
		{ca, 12345, "mallory", true},         // by key id
		{other, 77, "a", false},              // another CA's serial 77
		{ca, 0x8000000000000002, "a", false}, // live
	} {
		cert := signCert(t, tt.ca, tt.serial, tt.keyID)
		if got := query(t, keygen, krl, cert); got != tt.revoked {
			t.Errorf("ssh-keygen -Q: serial %d, key id %q: revoked %v; want %v", tt.serial, tt.keyID, got, tt.revoked)
		}
		c := parseCert(t, cert)
		if got := k.IsRevoked(c); got != tt.revoked {
			t.Errorf("IsRevoked: serial %d, key id %q: %v; want %v", tt.serial, tt.keyID, got, tt.revoked)
		}
	}
	// ssh-keygen lists what we wrote.
	out, err := exec.Command(keygen, "-Q", "-l", "-f", krl).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -Q -l: %v\n%s", err, out)
	}
	for _, want := range []string{"# KRL version 5", "# Comment: tunnel test", "serial: 77", "serial: 500-600", "id: mallory", ssh.FingerprintSHA256(caPub)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ssh-keygen -Q -l does not show %q:\n%s", want, out)
		}
	}
}

// TestParseSSHKeygenKRL: Parse reads a KRL that ssh-keygen -k wrote.
func TestParseSSHKeygenKRL(t *testing.T) {
	keygen := testenv.LookPath(t, "ssh-keygen")
	_, caPub := testCA(t, 1)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pub")
	spec := filepath.Join(dir, "spec")
	krl := filepath.Join(dir, "krl")
	if err := os.WriteFile(caFile, ssh.MarshalAuthorizedKey(caPub), 0o644); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for v := 2000; v < 2200; v += 2 {
		lines = append(lines, fmt.Sprintf("serial: %d", v))
	}
	lines = append(lines, "serial: 7", "serial: 10-900", "id: bob")
	if err := os.WriteFile(spec, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(keygen, "-k", "-z", "42", "-f", krl, "-s", caFile, spec).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -k: %v\n%s", err, out)
	}
	b, err := os.ReadFile(krl)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse of ssh-keygen's KRL: %v", err)
	}
	if k.Version != 42 || len(k.Sections) != 1 {
		t.Fatalf("version %d, %d sections; want 42 and 1", k.Version, len(k.Sections))
	}
	for serial, want := range map[uint64]bool{7: true, 8: false, 500: true, 2002: true, 2003: false, 2198: true, 2200: false} {
		if got := k.IsRevoked(certWith(caPub, serial)); got != want {
			t.Errorf("serial %d: IsRevoked %v; want %v", serial, got, want)
		}
	}
	if got := k.IsRevoked(&ssh.Certificate{SignatureKey: caPub, Serial: 1, KeyId: "bob"}); !got {
		t.Errorf("key id bob is not revoked")
	}
}

func parseCert(t *testing.T, path string) *ssh.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ssh.Certificate)
}
