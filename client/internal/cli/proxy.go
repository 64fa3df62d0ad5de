package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

func newProxyCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Open local listeners to services behind the gateway",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newProxyDBCmd(env))
	return cmd
}

func newProxyDBCmd(env Env) *cobra.Command {
	var port int
	var addr string
	cmd := &cobra.Command{
		Use:   "db NODE/SERVICE --port PORT",
		Short: "Listen on 127.0.0.1:PORT and carry each connection to a database",
		Long: `db opens a local listener; every connection to it is carried over QUIC,
with your login certificate, through the gateway to SERVICE on NODE. Your
roles must allow NODE/SERVICE (tunnel ls shows what they allow).

When the gateway cuts a connection (an administrator revoked your access,
your certificate expired, the gateway went away) tunnel proxy says so on
stderr, one line per connection:

  connection to db-1/postgres closed by the gateway: access revoked by an administrator

With several gateways in your profile (tunnel login --gateway a:8443,b:8443)
connections go through the first that answers; when it dies, its
connections are cut and new ones go through the next.

When your certificate expires, or the gateway no longer accepts it (your
account was locked or removed, the certificate revoked), the listener says
so and stops: run tunnel login and start it again.`,
		Example: `  tunnel proxy db db-1/postgres --port 5432 &
  psql -h 127.0.0.1 -p 5432 -U app app`,
		Args: exactArgs(1, "NODE/SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			if n, s, ok := strings.Cut(target, "/"); !ok || n == "" || s == "" {
				return fmt.Errorf("%q is not NODE/SERVICE (for example db-1/postgres)", target)
			}
			if port <= 0 || port > 65535 {
				return errors.New("--port PORT is required (1-65535)")
			}
			dir, err := profile.Open()
			if err != nil {
				return err
			}
			p, err := dir.Load()
			if err != nil {
				return err
			}
			cert, err := dir.TLSCertificate()
			if err != nil {
				return err
			}
			if err := profile.CheckValid(cert.Leaf, env.Now()); err != nil {
				return err
			}
			rctx, rcancel := context.WithTimeout(cmd.Context(), resolveTimeout)
			p, err = p.Resolved(rctx)
			rcancel()
			if err != nil {
				return err
			}
			conn, err := dialGateways(p, &cert)
			if err != nil {
				return err
			}
			defer conn.Close()
			ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("listen on %s:%d: %w", addr, port, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Listening on %s for %s (until your certificate expires at %s). Ctrl-C to stop.\n",
				ln.Addr(), target, fmtTime(cert.Leaf.NotAfter))
			expired := fmt.Errorf("%w: certificate expired: run tunnel login, then start tunnel proxy again", transport.ErrStop)
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			// Stop accepting when the certificate expires, even if nobody connects.
			t := time.AfterFunc(time.Until(cert.Leaf.NotAfter), func() { cancel(expired) })
			defer t.Stop()
			cuts := &cutReporter{opener: conn, target: target, out: env.Stderr, localCause: func() error {
				if errors.Is(context.Cause(ctx), expired) {
					return fmt.Errorf("your login certificate expired at %s: run tunnel login, then start tunnel proxy again", fmtTime(cert.Leaf.NotAfter))
				}
				return nil
			}, denied: func(ae *quic.ApplicationError) {
				// Every later connection would be refused the same way.
				cancel(fmt.Errorf("%w: the gateway no longer accepts your login certificate (%s): run tunnel login, then start tunnel proxy again", transport.ErrStop, ae.ErrorMessage))
			}}
			defer cuts.Close()
			// A connection the gateway closed with no stream on it (a lock
			// cuts the streams first) says so too.
			conn.onEnded(cuts.checkDenied)
			log := stderrLogger(env)
			f := &transport.Forwarder{Listener: ln, Opener: cuts, Target: target, Log: log, Carry: cuts.carry(log),
				Allow: func() error {
					if env.Now().After(cert.Leaf.NotAfter) {
						return expired
					}
					return nil
				}}
			err = f.Serve(ctx)
			if errors.Is(context.Cause(ctx), transport.ErrStop) {
				err = context.Cause(ctx)
			}
			if errors.Is(err, transport.ErrStop) {
				return errors.New(strings.TrimPrefix(err.Error(), transport.ErrStop.Error()+": "))
			}
			return err
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "local port to listen on")
	cmd.Flags().StringVar(&addr, "address", "127.0.0.1", "local address to listen on")
	return cmd
}
