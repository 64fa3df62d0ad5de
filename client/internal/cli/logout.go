package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
)

func newLogoutCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Delete your key and certificates from this machine",
		Long: `logout deletes the private key and the certificates under TUNNEL_HOME. The
profile (gateway, user, CA pin; no secrets) stays, so the next tunnel login
needs no flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := profile.Open()
			if err != nil {
				return err
			}
			had, err := dir.Logout()
			if err != nil {
				return fmt.Errorf("logout: %w", err)
			}
			if !had {
				fmt.Fprintln(cmd.OutOrStdout(), "Not logged in: there was no key or certificate to remove.")
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Logged out: key and certificates removed.")
			return nil
		},
	}
}
