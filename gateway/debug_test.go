package gateway

import (
	"context"
	"io"
	"net"
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

// TestDebugAddrHostile: connect-and-close, garbage and silent connections
// on the debug listener do not stop it from answering.
func TestDebugAddrHostile(t *testing.T) {
	g := startGateway(t, Config{DebugAddr: "127.0.0.1:0"})
	addr := g.DebugAddr().String()
	var silent []net.Conn
	for i := range 50 {
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
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("debug listener after hostile clients: %d", resp.StatusCode)
	}
}
