package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
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
			node, service, ok := strings.Cut(target, "/")
			if !ok || node == "" || service == "" {
				return fmt.Errorf("%q is not NODE/SERVICE (for example db-1/postgres)", target)
			}
			switch {
			case !cmd.Flags().Changed("port"):
				return errors.New("--port PORT is required: the local port to listen on (1-65535)")
			case port <= 0 || port > 65535:
				return fmt.Errorf("--port %d is not a port: give one from 1 to 65535", port)
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
			if err := checkTarget(cmd.Context(), env, node, service); err != nil {
				return err
			}
			conn, err := dialGateways(p, &cert)
			if err != nil {
				return err
			}
			defer conn.Close()
			ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%s is already in use by another program: stop it, or choose another --port", net.JoinHostPort(addr, strconv.Itoa(port)))
			} else if err != nil {
				return fmt.Errorf("listen on %s (--address, --port): %w", net.JoinHostPort(addr, strconv.Itoa(port)), err)
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
				then := ": run tunnel login, then start tunnel proxy again"
				if strings.Contains(ae.ErrorMessage, "tunnel login") {
					then = "; then start tunnel proxy again"
				}
				cancel(fmt.Errorf("%w: the gateway no longer accepts your login certificate: %s%s", transport.ErrStop, ae.ErrorMessage, then))
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
	cmd.Flags().IntVar(&port, "port", 0, "local port to listen on (required)")
	cmd.Flags().StringVar(&addr, "address", "127.0.0.1", "local address to listen on")
	return cmd
}

// checkTarget asks the gateway, before the listener opens, whether the
// caller may reach node/service, so that a typo is named now rather than
// at each connection. Only a definite answer refuses; if the gateway cannot
// be asked now (the listener works without it until a connection comes),
// it warns and lets the proxy start.
func checkTarget(ctx context.Context, env Env, node, service string) error {
	ctx, cancel := context.WithTimeout(ctx, checkTargetTimeout)
	defer cancel()
	var nodes []api.Node
	if err := adminCall(ctx, env, http.MethodGet, api.PathNodes, nil, nil, &nodes); err != nil {
		fmt.Fprintf(env.Stderr, "warning: could not check %s/%s with the gateway now: %v\n", node, service, err)
		return nil
	}
	i := slices.IndexFunc(nodes, func(n api.Node) bool { return n.Name == node })
	switch {
	case i < 0:
		return fmt.Errorf("your roles let you reach no node named %s (tunnel ls lists those they do)", node)
	case !nodes[i].Online:
		fmt.Fprintf(env.Stderr, "warning: node %s is offline now (its agent is not connected); connections will be refused until it is back\n", node)
	case !slices.Contains(nodes[i].Services, service):
		return fmt.Errorf("node %s has no service %s that your roles let you open; they let you open: %s", node, service, orNone(nodes[i].Services))
	}
	return nil
}

// checkTargetTimeout bounds checkTarget: the check is a convenience.
const checkTargetTimeout = 10 * time.Second
