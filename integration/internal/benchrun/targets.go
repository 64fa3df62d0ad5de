package benchrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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

// startEcho starts the echo server on the topology's server side: on
// 127.0.0.1 on loopback, on every address of the server's namespace on
// netns.
func startEcho(e *env, topo *topology) (*echoServer, error) {
	var ln net.Listener
	var err error
	if topo.isNetns() {
		ln, err = topo.server.ns.Listen("tcp", "0.0.0.0:0")
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
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

// Port is the port the echo server listens on.
func (s *echoServer) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

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

// startIperfServer runs one `iperf3 -s` on the server side and returns its
// port: bound to 127.0.0.1 on loopback, to every address of the server's
// namespace on netns. It serves one test at a time, which is how the
// harness uses it.
func startIperfServer(e *env, topo *topology, bin string) (int, *service, error) {
	dir, err := e.mkdir("iperf3")
	if err != nil {
		return 0, nil, err
	}
	srv := topo.server
	port, err := srv.freePort()
	if err != nil {
		return 0, nil, err
	}
	bind := "127.0.0.1"
	if topo.isNetns() {
		bind = "0.0.0.0"
	}
	cmd := exec.Command(bin, "-s", "-B", bind, "-p", fmt.Sprint(port), "--idle-timeout", "120")
	cmd.Dir = dir
	s, err := e.startServiceOn(srv, "iperf3 -s", cmd, filepath.Join(dir, "iperf3.log"))
	if err != nil {
		return 0, nil, err
	}
	// Wait for the port with a bare connect: iperf3 logs the aborted control
	// connection and goes on serving.
	if err := waitFor(context.Background(), 15*time.Second, s, func() error {
		return acceptsTCP(context.Background(), srv, loopback(port))
	}); err != nil {
		return 0, nil, fmt.Errorf("iperf3 -s: %w", err)
	}
	return port, s, nil
}

// startPostgres starts the throwaway PostgreSQL of integration/internal/pgtest
// on the server side. On netns it also listens on the server's LAN address,
// with a pg_hba.conf that lets the LAN in (scram-sha-256, like loopback).
func startPostgres(e *env, topo *topology) (*pgtest.Server, error) {
	var opts []pgtest.Option
	if topo.isNetns() {
		hba := filepath.Join(e.tmp, "pg_hba.conf")
		lines := "local all all trust\n" +
			"host all all 127.0.0.1/32 scram-sha-256\n" +
			"host all all " + netnsSubnet.String() + " scram-sha-256\n"
		// Readable by the postgres user pgtest may run the server as.
		if err := os.WriteFile(hba, []byte(lines), 0o644); err != nil {
			return nil, err
		}
		opts = append(opts,
			pgtest.WithSetting("listen_addresses", "127.0.0.1,"+topo.server.ip),
			pgtest.WithSetting("hba_file", hba))
	}
	var srv *pgtest.Server
	err := topo.server.do(func() error {
		return callTB(e, "pgtest", func(t testing.TB) {
			srv = pgtest.Start(t, opts...)
			if srv.PgbenchPath == "" {
				t.Fatalf("pgbench not found")
			}
		})
	})
	return srv, err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
