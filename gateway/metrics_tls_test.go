package gateway

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TLS handshake failures on the API port count in the metrics.
func TestMetricsTLSFailuresHooked(t *testing.T) {
	g := startGateway(t, Config{})
	ms, err := g.ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	c, err := net.Dial("tcp", g.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Read(make([]byte, 100))
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := metricsGet(t, ms.Addr().String(), "/metrics")
		if strings.Contains(body, `tunnel_gateway_handshake_failures_total{reason="tls"} 1`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tls failure counted:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
