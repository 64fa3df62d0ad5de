// Package vaulttest runs a throwaway real Vault server for tests:
// `vault server -dev` (in memory, unsealed, one root token) on a loopback
// port, optionally with TLS (-dev-tls), from the binary that
// scripts/install-deps.sh builds from the Go module proxy
// (integration/vault). Start fails in CI and skips locally when `vault` is
// not on the PATH (pkg/testenv).
//
// It is the one copy of this helper: pkg/vaultkeys' tests, certs' tests and
// the end-to-end tests (through integration/internal/vaulttest) all use
// it. The server log is printed with t.Log when the test fails; t.Cleanup
// stops the server and waits for it.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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

// readyTimeout bounds the wait for a new server to answer unsealed.
const readyTimeout = 60 * time.Second

// Server is a running dev-mode Vault.
type Server struct {
	// Addr is its URL (http://127.0.0.1:PORT, https:// with TLS).
	Addr string
	// Token is its root token.
	Token string
	// UnsealKey unseals it again after a test sealed it.
	UnsealKey string
	// CACert is, with TLS, the PEM file of the dev server's own CA.
	CACert string

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// Options change how the server starts.
type Options struct {
	// TLS serves HTTPS with a CA the dev server makes (Server.CACert).
	TLS bool
}

// Start runs a dev-mode Vault on a free loopback port and waits until it
// answers, initialized and unsealed, and has printed its unseal key.
func Start(t testing.TB) *Server { t.Helper(); return StartWith(t, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := testenv.LookPath(t, "vault")
	port := freePort(t)
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	if opts.TLS {
		scheme = "https"
	}
	s := &Server{Addr: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), Token: "root-" + hex.EncodeToString(b[:]),
		log: &syncBuffer{}, done: make(chan struct{})}
	home := t.TempDir()
	args := []string{"server", "-dev", "-dev-root-token-id=" + s.Token,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token"}
	if opts.TLS {
		certDir := filepath.Join(home, "tls")
		if err := os.Mkdir(certDir, 0o700); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
		s.CACert = filepath.Join(certDir, "vault-ca.pem")
	}
	s.cmd = exec.Command(bin, args...)
	// Its own home: the dev server would write ~/.vault-token otherwise;
	// and none of the caller's VAULT_* settings.
	s.cmd.Env = append(os.Environ(), "HOME="+home, "VAULT_ADDR=", "VAULT_TOKEN=", "VAULT_CACERT=", "SKIP_SETCAP=1")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("vaulttest: start %s: %v", bin, err)
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
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-s.done:
			t.Fatalf("vaulttest: vault exited at start:\n%s", s.log.String())
		default:
		}
		err := s.ready(t)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: vault did not become ready within %s (%v):\n%s", readyTimeout, err, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("vaulttest: %s ready in %s", s.Addr, time.Since(start).Round(time.Millisecond))
	return s
}

// ready reports nil once the server answers initialized and unsealed.
func (s *Server) ready(t testing.TB) error {
	if s.CACert != "" {
		if _, err := os.Stat(s.CACert); err != nil {
			return errors.New("no TLS CA file yet")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h, err := s.Client(t).Sys().HealthWithContext(ctx)
	switch {
	case err != nil:
		return err
	case !h.Initialized || h.Sealed:
		return fmt.Errorf("initialized %v, sealed %v", h.Initialized, h.Sealed)
	}
	// The dev server prints its unseal key just after it starts serving.
	m := unsealRE.FindStringSubmatch(s.log.String())
	if m == nil {
		return errors.New("no unseal key printed yet")
	}
	s.UnsealKey = m[1]
	return nil
}

var unsealRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// Unseal unseals the server after a test sealed it.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	if s.UnsealKey == "" {
		t.Fatalf("vaulttest: no unseal key in the dev server's output:\n%s", s.log.String())
	}
	st, err := s.Client(t).Sys().Unseal(s.UnsealKey)
	if err != nil || st.Sealed {
		t.Fatalf("vaulttest: unseal: %v (sealed %v)", err, st != nil && st.Sealed)
	}
}

// Client returns an API client with the root token.
func (s *Server) Client(t testing.TB) *vault.Client {
	t.Helper()
	cfg := &vault.Config{Address: s.Addr, HttpClient: &http.Client{Timeout: 30 * time.Second}}
	if s.CACert != "" {
		cfg.HttpClient.Transport = http.DefaultTransport.(*http.Transport).Clone()
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: s.CACert}); err != nil {
			t.Fatalf("vaulttest: TLS: %v", err)
		}
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatalf("vaulttest: client: %v", err)
	}
	c.SetToken(s.Token)
	return c
}

// Log returns what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// Stop stops the server and waits for it. Safe to call twice.
func (s *Server) Stop() {
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

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("vaulttest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
