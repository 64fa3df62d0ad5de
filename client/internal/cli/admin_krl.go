package cli

import "github.com/spf13/cobra"

func newAdminKRLCmd(env Env) *cobra.Command {
	return &cobra.Command{Use: "krl", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
