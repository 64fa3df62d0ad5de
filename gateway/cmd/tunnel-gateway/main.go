// Command tunnel-gateway runs the tunnel gateway: the HTTPS API, the
// certificate authority, the store and the audit log. See
// `tunnel-gateway --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tunnelhq/tunnel/gateway/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-gateway:", err)
		os.Exit(1)
	}
}
