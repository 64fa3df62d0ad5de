package cli

import "github.com/spf13/cobra"

func newRestoreCmd() *cobra.Command {
	return &cobra.Command{Use: "restore", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
