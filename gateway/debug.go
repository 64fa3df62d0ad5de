package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// The debug listener (--debug-addr) serves Go's runtime profiles
// (net/http/pprof: goroutines, heap, CPU) for operators and load tests. It
// is plain HTTP without authentication, so it binds loopback only: the
// profiles show goroutine stacks and memory contents' shapes.

// checkDebugAddr refuses a debug address that is not on loopback.
func checkDebugAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--debug-addr %q: %w (use 127.0.0.1:PORT)", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--debug-addr %q: the debug listener has no authentication and binds loopback only: use 127.0.0.1:PORT or [::1]:PORT", addr)
	}
	return nil
}

// debugServer serves the profiles on ln until it is closed.
func debugServer(ln net.Listener) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// listenDebug binds the debug listener if configured and serves it in the
// background; closeAll shuts it.
func (g *Gateway) listenDebug() error {
	if g.cfg.DebugAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", g.cfg.DebugAddr)
	if err != nil {
		return listenError("--debug-addr", "TCP", g.cfg.DebugAddr, err)
	}
	g.debugLn = ln
	g.debug = debugServer(ln)
	g.debugWG.Add(1)
	go func() {
		defer g.debugWG.Done()
		if err := g.debug.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.cfg.Log.Warn("debug listener stopped", "err", err)
		}
	}()
	return nil
}

// DebugAddr is the debug listener's address, nil when it is off.
func (g *Gateway) DebugAddr() net.Addr {
	if g.debugLn == nil {
		return nil
	}
	return g.debugLn.Addr()
}

func (g *Gateway) closeDebug() {
	if g.debug != nil {
		_ = g.debug.Close()
		g.debugWG.Wait()
	}
}
