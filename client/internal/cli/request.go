package cli

import "github.com/spf13/cobra"

func newRequestCmd(env Env) *cobra.Command {
	return &cobra.Command{Use: "request", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
