package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newRequestLsCmd(env Env) *cobra.Command {
	var (
		all, asJSON bool
		state       string
	)
	cmd := &cobra.Command{
		Use:   "ls [--all] [--state STATE] [--json]",
		Short: "List your requests and those awaiting your decision",
		Long: `ls lists your own requests and the pending requests you may approve or
deny. --all lists every request you may see: yours, every request for the
roles you approve, and every request for an admin. --state selects one
state: pending, approved, denied, expired or revoked.`,
		Example: "  tunnel request ls\n  tunnel request ls --all --state approved --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return requestCall(cmd.Context(), env, func(s *session) error {
				rs, err := s.client.ListRequests(cmd.Context(), all, state)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), rs)
				}
				if len(rs) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "No requests.")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tUSER\tROLE\tFOR\tSTATE\tUNTIL\tBY\tREASON")
				for _, r := range rs {
					until, by := "-", "-"
					if !r.End.IsZero() {
						until = fmtTime(r.End)
					}
					if r.DecidedBy != "" {
						by = r.DecidedBy
					}
					state := r.State
					if r.CanDecide {
						state += " (yours to decide)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.User, r.Role, time.Duration(r.Duration), state, until, by, r.Reason)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every request you may see, not only yours and those awaiting you")
	cmd.Flags().StringVar(&state, "state", "", "only requests in this state")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
