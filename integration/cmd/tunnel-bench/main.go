// Command tunnel-bench runs the data-path benchmarks (direct, stunnel,
// ssh -L and the tunnel, side by side on loopback) and writes the results
// into docs/BENCHMARKS.md. See `go run ./integration/cmd/tunnel-bench -h`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tunnelhq/tunnel/integration/internal/benchrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := benchrun.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-bench:", err)
		os.Exit(1)
	}
}
