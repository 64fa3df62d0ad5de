package cli

import (
	"os"
	"path/filepath"
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
}
