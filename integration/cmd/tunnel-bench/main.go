// Command tunnel-bench runs the data-path benchmarks (direct, stunnel,
// ssh -L and the tunnel, side by side on loopback, or with --topology netns
// between network namespaces joined by veth links of MTU 1500) and writes
// the results into docs/BENCHMARKS.md. See
// `go run ./integration/cmd/tunnel-bench -h`.
//
// SIGINT, SIGTERM and SIGHUP stop the run: every process it started is
// stopped and every network namespace it created is deleted before it
// exits.
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := benchrun.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-bench:", err)
		os.Exit(1)
	}
}
