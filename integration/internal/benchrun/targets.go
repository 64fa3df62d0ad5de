package benchrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// echoServer is a TCP echo server inside the harness, for the latency tests.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startEcho(e *env) (*echoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &echoServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	e.addCleanup("echo server", s.close)
	return s, nil
}

func (s *echoServer) Addr() string { return s.ln.Addr().String() }

func (s *echoServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 32<<10)
			_, _ = io.CopyBuffer(c, c, buf)
			_ = c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *echoServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// startIperfServer runs one `iperf3 -s` on a loopback port; it serves one
// test at a time, which is how the harness uses it.
func startIperfServer(e *env, bin string) (string, *service, error) {
	dir, err := e.mkdir("iperf3")
	if err != nil {
		return "", nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	addr := loopback(port)
	cmd := exec.Command(bin, "-s", "-B", "127.0.0.1", "-p", fmt.Sprint(port), "--idle-timeout", "120")
	cmd.Dir = dir
	s, err := e.startService("iperf3 -s", cmd, filepath.Join(dir, "iperf3.log"))
	if err != nil {
		return "", nil, err
	}
	// Wait for the port with a bare connect: iperf3 logs the aborted control
	// connection and goes on serving.
	if err := waitFor(context.Background(), 15*time.Second, s, func() error {
		return acceptsTCP(context.Background(), addr)
	}); err != nil {
		return "", nil, fmt.Errorf("iperf3 -s: %w", err)
	}
	return addr, s, nil
}

// startPostgres starts the throwaway PostgreSQL of integration/internal/pgtest.
func startPostgres(e *env) (*pgtest.Server, error) {
	var srv *pgtest.Server
	err := callTB(e, "pgtest", func(t testing.TB) {
		srv = pgtest.Start(t)
		if srv.PgbenchPath == "" {
			t.Fatalf("pgbench not found")
		}
	})
	return srv, err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
