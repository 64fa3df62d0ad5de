package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRequestRevokeCmd(env Env) *cobra.Command {
	var (
		comment string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "revoke ID [--comment TEXT]",
		Short: "End an approved request before its window ends",
		Long: `revoke ends an approved request now: every live session and stream that
only its role allowed is closed, and the requester is told why. An approver
of the role, an admin or the requester may revoke it.`,
		Example: `  tunnel request revoke req-1a2b3c4d5e6f --comment "incident closed"`,
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return requestCall(cmd.Context(), env, func(s *session) error {
				r, err := s.client.RevokeRequest(cmd.Context(), args[0], comment)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Revoked request %s: %s no longer holds role %s through it.\n", r.ID, r.User, r.Role)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "why (the requester sees it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the request as JSON")
	return cmd
}
