package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRequestDenyCmd(env Env) *cobra.Command {
	var (
		comment string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:     "deny ID --comment TEXT",
		Short:   "Deny a pending request, saying why",
		Example: `  tunnel request deny req-1a2b3c4d5e6f --comment "use the read-only role"`,
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if comment == "" {
				return fmt.Errorf("say why with --comment: %s %s --comment \"...\"", cmd.CommandPath(), args[0])
			}
			return requestCall(cmd.Context(), env, func(s *session) error {
				r, err := s.client.DenyRequest(cmd.Context(), args[0], comment)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Denied request %s of %s for role %s.\n", r.ID, r.User, r.Role)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "why (required; the requester sees it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the request as JSON")
	return cmd
}
