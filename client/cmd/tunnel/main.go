// Command tunnel is the engineer's and admin's client: login, status,
// logout and the admin commands. See `tunnel --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tunnelhq/tunnel/client/internal/cli"
	"github.com/tunnelhq/tunnel/client/sshclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], cli.Std())
	stop()
	var exit *sshclient.ExitError
	switch {
	case errors.As(err, &exit):
		// The remote command's status is ours; it said what it had to say.
		os.Exit(exit.Code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "tunnel:", err)
		os.Exit(1)
	}
}
