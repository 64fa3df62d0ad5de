package cli

import "github.com/spf13/cobra"

func newKEKCmd() *cobra.Command {
	return &cobra.Command{Use: "kek", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
