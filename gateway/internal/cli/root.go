// Package cli is the tunnel-gateway command line: one file per subcommand
// (init, run, dev), each a thin layer over package gateway.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/version"
)

// Run executes the command line args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "tunnel-gateway",
		Short: "The tunnel gateway: login, certificates, audit",
		Long: `tunnel-gateway authenticates engineers (password + TOTP), issues short-lived
X.509 and SSH certificates from the cluster CA, and keeps an append-only,
hash-chained audit log.

A first look, with nothing to configure:
  tunnel-gateway dev

A real cluster:
  tunnel-gateway init --data-dir /var/lib/tunnel --admin alice --admin-password-file pw.txt
  tunnel-gateway run  --data-dir /var/lib/tunnel --api-addr :8443`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newInitCmd(), newRunCmd(), newDevCmd(), newBackupCmd(), newRestoreCmd(), newKEKCmd(), newVaultCmd())
	return root
}

// logFlags are the logging flags shared by run and dev.
type logFlags struct {
	level  string
	format string
}

func (f *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&f.format, "log-format", "text", "log format: text or json")
}

func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(f.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", f.format)
}
