package cli

import "github.com/spf13/cobra"

func newAdminNetworkCmd(env Env) *cobra.Command {
	return &cobra.Command{Use: "network", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
