package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRequestApproveCmd(env Env) *cobra.Command {
	var (
		comment string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "approve ID [--comment TEXT]",
		Short: "Approve a pending request",
		Long: `approve grants the request's role to its requester from now for the
duration asked, at most the role's max TTL. It takes a role whose --approve
lists the requested role; nobody approves their own request.`,
		Example: `  tunnel request approve req-1a2b3c4d5e6f --comment "ok for INC-123"`,
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return requestCall(cmd.Context(), env, func(s *session) error {
				r, err := s.client.ApproveRequest(cmd.Context(), args[0], comment)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Approved request %s: %s holds role %s until %s.\n", r.ID, r.User, r.Role, fmtTime(r.End))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "a word for the requester")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the request as JSON")
	return cmd
}
