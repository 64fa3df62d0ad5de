package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func metricsGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsEndpoint: the gateway's own registry is served with its
// live figures; /readyz follows the store and the gateway's life.
func TestMetricsEndpoint(t *testing.T) {
	g := startGateway(t, Config{})
	ms, err := g.ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	addr := ms.Addr().String()
	code, body := metricsGet(t, addr, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"tunnel_gateway_agents_connected 0\n",
		`tunnel_gateway_streams_active{path="relayed"} 0`,
		`tunnel_gateway_connections{kind="agent",transport="udp"} 0`,
		`tunnel_gateway_store_operation_duration_seconds_count{operation="get_meta"}`,
		"tunnel_gateway_audit_queue_length 0\n",
		"tunnel_gateway_panics_recovered_total ",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body := metricsGet(t, addr, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q; want 200 ready", code, body)
	}
	// The store goes away: not ready, still alive.
	if err := g.store.Close(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, addr, 503, "not ready: the gateway cannot reach its store\n")
	if code, _ := metricsGet(t, addr, "/healthz"); code != 200 {
		t.Errorf("/healthz with the store closed: %d; want 200", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = g.Close(ctx)
	waitReady(t, addr, 503, "not ready: the gateway is not serving (it is starting or shutting down)\n")
}

// waitReady polls /readyz (its answer is cached for a second) until it
// gives code and body.
func waitReady(t *testing.T, addr string, code int, body string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, b := metricsGet(t, addr, "/readyz")
		if c == code && b == body {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q; want %d %q", c, b, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetricsHostile: connect-and-close, garbage and silent connections
// on the metrics listener do not stop it from answering.
func TestMetricsHostile(t *testing.T) {
	g := startGateway(t, Config{})
	ms, err := g.ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	addr := ms.Addr().String()
	var silent []net.Conn
	for i := range 12 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			c.Close()
		case 1:
			_, _ = c.Write([]byte("\x16\x03\x01 garbage \x00\xff\r\n\r\n"))
			c.Close()
		default:
			silent = append(silent, c)
		}
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	if code, _ := metricsGet(t, addr, "/metrics"); code != 200 {
		t.Errorf("/metrics after hostile clients: %d; want 200", code)
	}
}
