package cli

import (
	"github.com/spf13/cobra"
)

func newRequestShowCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show one request",
		Example: "  tunnel request show req-1a2b3c4d5e6f --json",
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return requestCall(cmd.Context(), env, func(s *session) error {
				r, err := s.client.GetRequest(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				return printRequest(cmd.OutOrStdout(), r)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
