package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/client/profile"
)

// logout says whether it removed anything: a second one says there was
// nothing to remove.
func TestLogoutTwice(t *testing.T) {
	home := t.TempDir()
	for _, f := range []string{profile.KeyFile, profile.TLSCertFile} {
		if err := os.WriteFile(filepath.Join(home, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		"Logged out: key and certificates removed.\n",
		"Not logged in: there was no key or certificate to remove.\n",
	} {
		out, err := runIn(t, home, &testProfile, "logout")
		if err != nil || out != want {
			t.Errorf("logout: %q, %v; want %q", out, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(home, profile.KeyFile)); !os.IsNotExist(err) {
		t.Errorf("the key is still there after logout (%v)", err)
	}
	// The profile stays: a plain tunnel login will do, and status says so.
	out, err := runIn(t, home, nil, "status")
	if err == nil || !strings.Contains(out+err.Error(), "run tunnel login (your profile keeps the gateway, user and CA pin)") {
		t.Errorf("status after logout: %q, %v; want it to say a plain tunnel login will do", out, err)
	}
}
