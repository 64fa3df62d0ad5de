package gateway

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebugAddr: --debug-addr serves the goroutine profile on loopback,
// and a non-loopback address is refused before anything starts.
func TestDebugAddr(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "10.1.2.3:6060", "example.com:6060", "6060"} {
		_, err := New(context.Background(), Config{DataDir: filepath.Join(t.TempDir(), "none"), DebugAddr: addr})
		if err == nil || !strings.Contains(err.Error(), "--debug-addr") {
			t.Errorf("--debug-addr %s: %v; want a refusal naming --debug-addr", addr, err)
		}
	}
	g := startGateway(t, Config{DebugAddr: "127.0.0.1:0"})
	resp, err := http.Get("http://" + g.DebugAddr().String() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "goroutine profile: total ") {
		t.Errorf("goroutine profile: %d %.80q", resp.StatusCode, body)
	}
}
