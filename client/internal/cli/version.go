package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/version"
)

func newVersionCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the version of this tunnel binary",
		Long: `version shows the release version, the commit the binary was built from,
the Go version and the platform. tunnel --version prints the same line.
It needs no login and does not contact the gateway.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "tunnel %s\n", v)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
