// Package vaulttest runs a throwaway real Vault server for end-to-end
// tests: `vault server -dev` (in memory, unsealed, one root token) on a
// loopback port, the binary scripts/install-deps.sh builds from the Go
// module proxy (integration/vault). Start fails in CI and skips locally
// when `vault` is not on the PATH.
//
// The server log is printed with t.Log when the test fails; t.Cleanup
// stops the server and waits for it.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// Server is a running dev-mode Vault.
type Server struct {
	// Addr is its URL (http://127.0.0.1:PORT).
	Addr string
	// Token is its root token.
	Token string
	// UnsealKey unseals it again after a test sealed it.
	UnsealKey string

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// Start runs a dev-mode Vault on a free loopback port and waits until it
// answers.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := testenv.LookPath(t, "vault")
	port := testenv.FreePort(t)
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := &Server{Addr: fmt.Sprintf("http://127.0.0.1:%d", port), Token: "root-" + hex.EncodeToString(b[:]),
		log: &syncBuffer{}, done: make(chan struct{})}
	home := t.TempDir()
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+s.Token,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token")
	// Its own home: the dev server would write ~/.vault-token otherwise.
	s.cmd.Env = append(os.Environ(), "HOME="+home, "VAULT_ADDR=", "VAULT_TOKEN=", "SKIP_SETCAP=1")
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
	c := s.Client(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("vaulttest: vault exited at start:\n%s", s.log.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: vault did not become ready within 60s (%v):\n%s", err, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := unsealRE.FindStringSubmatch(s.log.String()); m != nil {
		s.UnsealKey = m[1]
	}
	t.Logf("vaulttest: %s ready in %s", s.Addr, time.Since(start).Round(time.Millisecond))
	return s
}

var unsealRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// Unseal unseals the server after a test sealed it.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	if s.UnsealKey == "" {
		t.Fatal("vaulttest: no unseal key in the dev server's output")
	}
	if _, err := s.Client(t).Sys().Unseal(s.UnsealKey); err != nil {
		t.Fatalf("vaulttest: unseal: %v", err)
	}
}

// Client returns an API client with the root token.
func (s *Server) Client(t testing.TB) *vault.Client {
	t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr
	cfg.HttpClient = &http.Client{Timeout: 30 * time.Second}
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatalf("vaulttest: client: %v", err)
	}
	c.SetToken(s.Token)
	return c
}

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
