// Package cli is the tunnel-agent command line: a thin layer over package
// agent, one file per subcommand.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/agent"
	"github.com/tunnelhq/tunnel/pkg/secretfile"
	"github.com/tunnelhq/tunnel/pkg/version"
)

// Run executes the command line args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:   "tunnel-agent",
		Short: "The tunnel agent: connects this VM to the gateway",
		Long: `tunnel-agent runs on every VM. It dials out to the gateway over QUIC with
mutual TLS (the VM needs no inbound port), exposes local services to the
nodes that policy allows, and opens local listeners that reach services on
other nodes, so an application connects to 127.0.0.1:5432 as if the database
were local.

First run, with a join token from an admin (tunnel admin tokens create):
  tunnel-agent run --data-dir /var/lib/tunnel-agent --gateway gw.example.com:8443 \
      --ca-pin sha256:HEX --token tjt_... --config /etc/tunnel/agent.yaml
Later runs reuse the sealed identity in --data-dir: the token is no longer needed.
One agent runs per --data-dir: a second one started on it is refused.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.AddCommand(newRunCmd())
	return root.ExecuteContext(ctx)
}

func newRunCmd() *cobra.Command {
	var cfg agent.Config
	var configFile, tokenFile, logLevel, logFormat, metricsAddr string
	cmd := &cobra.Command{
		Use:   "run --data-dir DIR --gateway H:P --ca-pin sha256:HEX [--token T] [--config FILE]",
		Short: "Enrol if needed, then run the agent",
		Long: `run enrols the agent with --token the first time, then keeps its identity
sealed in --data-dir (0700; the identity 0600) and reuses it. The certificate
is renewed automatically at about two thirds of its life.

It prints "connected to gateway HOST:PORT" each time it connects; when it
cannot, it logs what failed and what to check, and keeps retrying (also
while an administrator has locked the agent: it comes back by itself once
unlocked).

With several gateways sharing one store (--gateway a:8443,b:8443,c:8443)
the agent keeps a connection to every one, each retried on its own, and
serves the streams any of them delivers. Its local listeners' connections go
out through the first gateway of the list that is connected: at once
through the next one when it is gone, and back to it when it returns. Enrolment and renewal use the first
gateway that answers.

FILE (YAML; unknown keys are errors, named with their line):
  expose:                      # services on this VM that others may reach
    - name: postgres
      address: 127.0.0.1:5432
  listen:                      # local listeners that reach services elsewhere
    - name: orders-db
      address: 127.0.0.1:5432
      target: db-1/postgres

The token may also come from --token-file or TUNNEL_JOIN_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.DataDir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			fc, err := agent.LoadConfig(configFile)
			if err != nil {
				return err
			}
			cfg.File = fc
			if cfg.Token == "" && tokenFile != "" {
				if cfg.Token, err = secretfile.Read(tokenFile); err != nil {
					return err
				}
			}
			if cfg.Token == "" {
				cfg.Token = os.Getenv("TUNNEL_JOIN_TOKEN")
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			opts := &slog.HandlerOptions{Level: lvl}
			if strings.EqualFold(logFormat, "json") {
				cfg.Log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts))
			} else {
				cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts))
			}
			// Say "connected" only once the gateway has welcomed the agent
			// (failures are logged, with what to check).
			out := cmd.OutOrStdout()
			cfg.Connected = func(gw string) { fmt.Fprintf(out, "connected to gateway %s\n", gw) }
			if metricsAddr != "" {
				cfg.Metrics = agent.NewMetrics(version.Version)
				srv, err := cfg.Metrics.Listen(metricsAddr, cfg.Log.With("component", "metrics"))
				if err != nil {
					return err
				}
				defer srv.Close()
				fmt.Fprintf(out, "Metrics on http://%s/metrics (health: /healthz, /readyz)\n", srv.Addr())
			}
			err = agent.Run(cmd.Context(), cfg)
			if err == nil && cmd.Context().Err() != nil {
				cfg.Log.Info("stopped (signal): connections to the gateways closed, listeners closed")
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the sealed identity (created, 0700)")
	f.StringVar(&cfg.Gateway, "gateway", "", "gateway address HOST:PORT, or several separated by commas (the agent connects to every one), or srv:ZONE to find them in DNS (the SRV records the gateways publish with --dns-addr)")
	f.BoolVar(&cfg.OverTCP, "quic-over-tcp", false, "carry QUIC over TLS on the gateway's TCP port from the start (slower; for networks that mangle UDP); without it, only while UDP gets no answer")
	f.StringVar(&cfg.DNSServer, "dns-server", "", "DNS server HOST:PORT that resolves --gateway srv:ZONE (default: this machine's resolvers)")
	f.StringVar(&cfg.Pin, "ca-pin", "", "cluster CA pin, sha256:HEX (tunnel-gateway init printed it)")
	f.StringVar(&cfg.Token, "token", "", "join token, needed only to enrol")
	f.StringVar(&tokenFile, "token-file", "", "read the join token from this file")
	f.StringVar(&configFile, "config", "", "YAML file of services to expose and listeners to open")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics (/metrics), /healthz and /readyz (ready while connected to a gateway) over plain HTTP here, e.g. 127.0.0.1:9091 (see docs/METRICS.md); off when empty")
	return cmd
}
