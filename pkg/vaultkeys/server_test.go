package vaultkeys

// A throwaway real Vault for this package's tests: `vault server -dev` on a
// loopback port, like integration/internal/vaulttest (which pkg/ must not
// import). It fails in CI and skips locally when `vault` is missing.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

type testServer struct {
	Addr   string
	Token  string
	CACert string // with TLS: the dev CA's PEM file

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// startVault runs a dev-mode Vault with Transit mounted; tls selects
// -dev-tls (a self-made CA in CACert).
func startVault(t testing.TB, tls bool) *testServer {
	t.Helper()
	bin := testenv.LookPath(t, "vault")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var b [16]byte
	_, _ = rand.Read(b[:])
	scheme := "http"
	if tls {
		scheme = "https"
	}
	s := &testServer{Addr: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), Token: "root-" + hex.EncodeToString(b[:]),
		log: &syncBuffer{}, done: make(chan struct{})}
	home := t.TempDir()
	args := []string{"server", "-dev", "-dev-root-token-id=" + s.Token,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token"}
	if tls {
		certDir := filepath.Join(home, "tls")
		if err := os.Mkdir(certDir, 0o700); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
		s.CACert = filepath.Join(certDir, "vault-ca.pem")
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), "HOME="+home, "VAULT_ADDR=", "VAULT_TOKEN=", "VAULT_CACERT=", "SKIP_SETCAP=1")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("vault log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("vault exited at start:\n%s", s.log.String())
		default:
		}
		var h *vault.HealthResponse
		err := fmt.Errorf("no TLS CA yet")
		if _, statErr := os.Stat(s.CACert); !tls || statErr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			h, err = s.Client(t).Sys().HealthWithContext(ctx)
			cancel()
		}
		if err == nil && h.Initialized && !h.Sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault did not become ready within 60s (%v):\n%s", err, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Client(t).Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	return s
}

// Client returns an API client with the root token.
func (s *testServer) Client(t testing.TB) *vault.Client {
	t.Helper()
	cfg := &vault.Config{Address: s.Addr, HttpClient: &http.Client{Timeout: 30 * time.Second}}
	if s.CACert != "" {
		cfg.HttpClient.Transport = http.DefaultTransport.(*http.Transport).Clone()
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: s.CACert}); err != nil {
			t.Fatalf("vault TLS: %v", err)
		}
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	c.SetToken(s.Token)
	return c
}

var unsealKeyRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// Unseal unseals the dev server with the key it printed at start.
func (s *testServer) Unseal(t testing.TB) {
	t.Helper()
	m := unsealKeyRE.FindStringSubmatch(s.log.String())
	if m == nil {
		t.Fatalf("no unseal key in the vault log:\n%s", s.log.String())
	}
	st, err := s.Client(t).Sys().Unseal(m[1])
	if err != nil || st.Sealed {
		t.Fatalf("unseal: %v (sealed %v)", err, st != nil && st.Sealed)
	}
}

// Stop stops the server and waits for it. Safe to call twice.
func (s *testServer) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newClient starts a client of s with its root token.
func newClient(t testing.TB, s *testServer) *Client {
	t.Helper()
	c, err := New(context.Background(), Config{Addr: s.Addr, Token: s.Token, CACert: s.CACert})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newSigner creates an Ed25519 key name and returns its Signer.
func newSigner(t testing.TB, c *Client, name string) *Signer {
	t.Helper()
	ctx := context.Background()
	if created, err := c.EnsureKey(ctx, name, KeyEd25519); err != nil || !created {
		t.Fatalf("EnsureKey(%s) = %v, %v; want created", name, created, err)
	}
	s, err := NewSigner(ctx, c, name)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}
