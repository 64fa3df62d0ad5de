package cli

import "github.com/spf13/cobra"

func newBackupCmd() *cobra.Command {
	return &cobra.Command{Use: "backup", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
