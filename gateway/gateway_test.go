package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/agent"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestNoLeaks runs a gateway and two agents in this process, carries a
// connection through them, shuts everything down, and checks that no
// goroutine is left behind.
func TestNoLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tn := startTunnel(t, func(c net.Conn) { io.Copy(c, c) })
	tn.stop(t)
}

// testTunnel is a gateway and two agents in this process: app-1 listens
// on Local and reaches db-1/svc, served by the handler given.
type testTunnel struct {
	Local   string
	g       *Gateway
	served  chan error
	cancel  context.CancelFunc
	agents  chan error
	svc     net.Listener
	svcDone chan struct{}
}

func startTunnel(t testing.TB, handle func(net.Conn)) *testTunnel {
	return startTunnelPath(t, handle, os.Getenv("TUNNEL_BENCH_DIRECT"))
}

// startTunnelPath is startTunnel with app-1's direct setting ("off" keeps
// its streams on the relay).
func startTunnelPath(t testing.TB, handle func(net.Conn), direct string) *testTunnel {
	ctx := context.Background()
	dir := t.TempDir()
	res, err := Init(ctx, InitConfig{DataDir: filepath.Join(dir, "gw"), Cluster: "leak"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(ctx, Config{DataDir: res.DataDir, APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	tn := &testTunnel{g: g, served: make(chan error, 1), agents: make(chan error, 2), svcDone: make(chan struct{})}
	go func() { tn.served <- g.Serve() }()

	now := time.Now()
	for _, name := range []string{"db-1", "app-1"} {
		sum := sha256.Sum256([]byte("token-" + name))
		if err := g.store.CreateJoinToken(ctx, store.JoinToken{Hash: hex.EncodeToString(sum[:]), Agent: name, CreatedBy: "test",
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, audit.Event{Time: now, Type: audit.TokenCreated, Actor: "test", Outcome: audit.Success}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.store.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "app-1", To: "db-1/svc", CreatedAt: now},
		audit.Event{Time: now, Type: audit.PolicyAdded, Actor: "test", Outcome: audit.Success}); err != nil {
		t.Fatal(err)
	}
	if err := g.relay.ReloadPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	tn.svc, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(tn.svcDone)
		for {
			c, err := tn.svc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	local, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tn.Local = local.Addr().String()
	local.Close()

	actx, cancel := context.WithCancel(ctx)
	tn.cancel = cancel
	run := func(name string, fc *agent.FileConfig) {
		go func() {
			tn.agents <- agent.Run(actx, agent.Config{DataDir: filepath.Join(dir, name), Gateway: g.Addr().String(),
				Pin: res.Pin, Token: "token-" + name, File: fc})
		}()
	}
	run("db-1", &agent.FileConfig{Expose: []agent.Expose{{Name: "svc", Address: tn.svc.Addr().String()}}})
	run("app-1", &agent.FileConfig{Listen: []agent.Listen{{Name: "svc", Address: tn.Local, Target: "db-1/svc"}}, Direct: direct})

	deadline := time.Now().Add(20 * time.Second)
	for {
		// A stream that gets through ends cleanly after a half-close; one
		// refused (no connection yet) is reset.
		c, err := net.DialTimeout("tcp", tn.Local, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			err = c.(*net.TCPConn).CloseWrite()
			if err == nil {
				_, err = io.ReadAll(c)
			}
			c.Close()
		}
		if err == nil {
			return tn
		}
		if time.Now().After(deadline) {
			t.Fatalf("no round trip through the tunnel: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (tn *testTunnel) stop(t testing.TB) {
	tn.cancel()
	for range 2 {
		if err := <-tn.agents; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := tn.g.Close(sctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := tn.g.Close(sctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := <-tn.served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	tn.svc.Close()
	<-tn.svcDone
}

// BenchmarkTunnelBulk measures one-stream throughput through app agent,
// gateway and db agent in one process (for profiling: -cpuprofile).
func BenchmarkTunnelBulk(b *testing.B) {
	tn := startTunnel(b, func(c net.Conn) { io.Copy(io.Discard, c) })
	defer tn.stop(b)
	const size = 64 << 20
	buf := make([]byte, 256<<10)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("tcp", tn.Local)
		if err != nil {
			b.Fatal(err)
		}
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
}

// BenchmarkTunnelConnect measures a new connection and its first byte.
func BenchmarkTunnelConnect(b *testing.B) {
	tn := startTunnel(b, func(c net.Conn) { io.Copy(c, c) })
	defer tn.stop(b)
	one := make([]byte, 1)
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("tcp", tn.Local)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "hello" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// BenchmarkTunnelRTT measures a 64-byte round trip on an open connection.
func BenchmarkTunnelRTT(b *testing.B) {
	tn := startTunnel(b, func(c net.Conn) { io.Copy(c, c) })
	defer tn.stop(b)
	c, err := net.Dial("tcp", tn.Local)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}
