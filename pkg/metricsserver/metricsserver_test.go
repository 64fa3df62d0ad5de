package metricsserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Registry == nil {
		reg := prometheus.NewRegistry()
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "Things."})
		c.Add(3)
		reg.MustRegister(c)
		cfg.Registry = reg
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, s *Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	var broken atomic.Bool
	s := start(t, Config{ReadyCache: time.Nanosecond, Ready: func(context.Context) error {
		if broken.Load() {
			return errors.New("the store does not answer")
		}
		return nil
	}})
	if code, body := get(t, s, "/metrics"); code != 200 || !strings.Contains(body, "test_things_total 3") {
		t.Errorf("/metrics: %d %q; want 200 with test_things_total 3", code, body)
	}
	if code, body := get(t, s, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q; want 200 ok", code, body)
	}
	if code, body := get(t, s, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q; want 200 ready", code, body)
	}
	broken.Store(true)
	if code, body := get(t, s, "/readyz"); code != 503 || body != "not ready: the store does not answer\n" {
		t.Errorf("/readyz with the store away: %d %q; want 503 saying why", code, body)
	}
	// Liveness does not depend on readiness.
	if code, _ := get(t, s, "/healthz"); code != 200 {
		t.Errorf("/healthz while not ready: %d; want 200", code)
	}
	broken.Store(false)
	if code, _ := get(t, s, "/readyz"); code != 200 {
		t.Errorf("/readyz once back: %d; want 200", code)
	}
	if code, _ := get(t, s, "/other"); code != 404 {
		t.Errorf("/other: %d; want 404", code)
	}
	resp, err := http.Post("http://"+s.Addr().String()+"/metrics", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d; want 405", resp.StatusCode)
	}
}

// TestReadyCached: a flood of probes costs one check per ReadyCache.
func TestReadyCached(t *testing.T) {
	var calls atomic.Int64
	now := time.Unix(1000, 0)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	s := start(t, Config{ReadyCache: time.Minute, Clock: func() time.Time { return *clock.Load() },
		Ready: func(context.Context) error { calls.Add(1); return nil }})
	for range 20 {
		get(t, s, "/readyz")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("20 probes within the cache time made %d checks; want 1", n)
	}
	later := now.Add(2 * time.Minute)
	clock.Store(&later)
	get(t, s, "/readyz")
	if n := calls.Load(); n != 2 {
		t.Errorf("after the cache time: %d checks; want 2", n)
	}
}

// TestHostileClients: connect-and-close, garbage and silent clients
// cost nothing lasting, and the server goes on answering.
func TestHostileClients(t *testing.T) {
	s := start(t, Config{HeaderTimeout: 200 * time.Millisecond})
	addr := s.Addr().String()
	for range 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("\x16\x03\x01\x00\xffGARBAGE\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "HTTP/1.1 400") {
		t.Errorf("garbage got %q; want a 400", line)
	}
	// A silent client is closed after the header timeout.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = silent.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ne net.Error
	if _, err := silent.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("silent client: read %v; want the server to close the connection", err)
	}
	if code, _ := get(t, s, "/healthz"); code != 200 {
		t.Errorf("/healthz after hostile clients: %d; want 200", code)
	}
}

// TestConnectionCaps: connections over the per-source cap are closed at
// once.
func TestConnectionCaps(t *testing.T) {
	s := start(t, Config{MaxConnsPerSource: 2, HeaderTimeout: 10 * time.Second})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// The third is reset at once (the dial itself may see the reset).
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Errorf("third connection from one source read %d bytes; want it closed at once", n)
		}
	}
	held[0].Close()
	held = held[1:]
	// A slot freed is taken again (the limiter sees the close soon).
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + s.Addr().String() + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request served after a slot was freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPanicRecovered: a panic in a handler costs that request a 500 and
// is counted (pkg/panics).
func TestPanicRecovered(t *testing.T) {
	h := recoverPanics(slog.New(slog.DiscardHandler), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("handler bug") }))
	rec := httptest.NewRecorder()
	before := panics.Count()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 500 {
		t.Errorf("panicking handler: %d; want 500", rec.Code)
	}
	if got := panics.Count() - before; got != 1 {
		t.Errorf("panics counted: %d; want 1", got)
	}
}

func TestCloseTwice(t *testing.T) {
	s := start(t, Config{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("dial after Close succeeded; want refused")
	}
}
