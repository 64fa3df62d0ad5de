package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/sshkrl"
)

// krlGateway serves GET api.PathKRL with whatever answer holds (a status
// and a body), over TLS under a real CA; it returns its address and pin.
func krlGateway(t *testing.T, answer *atomic.Value) (addr, pin string) {
	t.Helper()
	ca, err := certs.Generate(certs.Config{Cluster: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueX509Server(certs.X509Request{ID: identity.ID{Cluster: "test", Kind: identity.Gateway, Name: "gw"},
		PublicKey: pub, TTL: time.Hour, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != api.PathKRL {
			t.Errorf("request %s %s; want GET %s", r.Method, r.URL.Path, api.PathKRL)
		}
		a := answer.Load().(krlAnswer)
		w.WriteHeader(a.status)
		w.Write(a.body)
	}))
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.X509CA().Raw}, PrivateKey: priv}}}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String(), ca.Pin()
}

type krlAnswer struct {
	status int
	body   []byte
}

// TestAdminKRL: tunnel admin krl writes the gateway's KRL to stdout or,
// atomically, over --out; an answer that is not a KRL, or a refusal,
// leaves the existing file as it was and says why.
func TestAdminKRL(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	caPub, err := ssh.NewPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	good, err := (&sshkrl.KRL{Version: 42, Sections: []sshkrl.CertSection{{CA: caPub, Serials: sshkrl.Serials(7, 9)}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var answer atomic.Value
	answer.Store(krlAnswer{200, good})
	addr, pin := krlGateway(t, &answer)
	base := []string{"admin", "krl", "--gateway", addr, "--ca-pin", pin}

	out, err := run(t, base...)
	if err != nil || out != string(good) {
		t.Fatalf("admin krl to stdout: %v; got %d bytes, want the KRL's %d", err, len(out), len(good))
	}

	file := filepath.Join(t.TempDir(), "revoked_keys")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, append(base, "--out", file)...)
	if err != nil || !strings.Contains(out, "KRL version 42, 2 revoked certificate(s)") {
		t.Fatalf("admin krl --out: %v, %q", err, out)
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, good) {
		t.Errorf("--out wrote %q; want the KRL", b)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("--out file mode: %v, %v; want 0644 (sshd reads it)", fi.Mode(), err)
	}

	refusal, _ := json.Marshal(api.Error{Code: api.CodeStoreUnavailable, Message: "the gateway cannot reach its store"})
	for _, tt := range []struct {
		name   string
		answer krlAnswer
		want   string
	}{
		{"not a KRL", krlAnswer{200, []byte("<html>proxy error</html>")}, "is not a KRL sshd would read"},
		{"a refusal", krlAnswer{503, refusal}, "the gateway cannot reach its store"},
	} {
		answer.Store(tt.answer)
		_, err := run(t, append(base, "--out", file)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want an error saying %q", tt.name, err, tt.want)
		}
		if b, _ := os.ReadFile(file); !bytes.Equal(b, good) {
			t.Errorf("%s: the file became %q; want it left as it was", tt.name, b)
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".revoked_keys.tmp*")); len(left) > 0 {
			t.Errorf("%s: temporary files left: %v", tt.name, left)
		}
	}
}
