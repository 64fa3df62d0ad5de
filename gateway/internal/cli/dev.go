package cli

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/gateway"
	"github.com/tunnelhq/tunnel/pkg/termqr"
	"github.com/tunnelhq/tunnel/pkg/version"
)

func newDevCmd() *cobra.Command {
	var dataDir, addr, sshAddr string
	var logs logFlags
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR]",
		Short: "Init and run a gateway on loopback, printing the first admin's credentials",
		Long: `dev is a first look with nothing to configure: it creates a cluster with an
admin user "admin" and a random password, prints how to log in (password,
TOTP secret and QR code), and runs the gateway on 127.0.0.1:8443 with the
embedded defaults (SQLite store, local CA, key file).

Without --data-dir the cluster lives in a temporary directory removed on
exit. With --data-dir it is kept; a second dev run reuses it (the admin's
credentials are printed only when the cluster is created).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			// Before a cluster is made and its admin's password printed:
			// a second dev on the same addresses would print the
			// credentials of a cluster that never runs.
			if err := gateway.CheckListen(gateway.Config{APIAddr: addr, SSHAddr: sshAddr}); err != nil {
				return err
			}
			if dataDir == "" {
				tmp, err := os.MkdirTemp("", "tunnel-dev-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dataDir = filepath.Join(tmp, "data")
			}
			password := rand.Text()
			res, err := gateway.Init(cmd.Context(), gateway.InitConfig{
				DataDir: dataDir, Cluster: "dev", Admin: "admin", AdminPassword: password,
			})
			switch {
			case errors.Is(err, gateway.ErrInitialized):
				fmt.Fprintf(out, "Reusing the cluster in %s (its admin credentials were printed when it was created).\n", dataDir)
			case err != nil:
				return err
			default:
				fmt.Fprintf(out, "Development cluster %q in %s\n\n", res.Cluster, dataDir)
				fmt.Fprintf(out, "Admin user: admin\nPassword:   %s\n\n", password)
				termqr.PrintEnrollment(out, "admin", res.Admin.URI, res.Admin.Secret)
				fmt.Fprintf(out, "\nLog in from another terminal:\n  tunnel login --gateway %s --ca-pin %s --user admin\n", addr, res.Pin)
				fmt.Fprintf(out, "\nWeb console: https://%s/ui/ once your browser trusts the cluster CA\n"+
					"(tunnel ca --type x509 --gateway %s --ca-pin %s > tunnel-ca.pem, then import it: docs/CONSOLE.md)\n\n", addr, addr, res.Pin)
			}
			cfg := gateway.Config{DataDir: dataDir, APIAddr: addr, SSHAddr: sshAddr, Log: log, Version: version.Version}
			return serve(cmd.Context(), cfg, out, nil)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep the cluster in DIR (default: a temporary directory)")
	cmd.Flags().StringVar(&addr, "api-addr", "127.0.0.1:8443", "HTTPS listen address")
	cmd.Flags().StringVar(&sshAddr, "ssh-addr", "127.0.0.1:2222", "SSH jump host address (empty: off)")
	logs.register(cmd)
	return cmd
}
