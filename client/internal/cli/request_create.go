package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newRequestCreateCmd(env Env) *cobra.Command {
	var (
		role, reason string
		dur, timeout time.Duration
		wait, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "create --role ROLE --for DURATION --reason TEXT [--wait]",
		Short: "Ask for a role for a while",
		Long: `create asks for ROLE for DURATION, with a reason the approvers see. The
window starts when an approver approves it and lasts DURATION, at most the
role's max TTL. A request nobody decides within 24 hours expires.

With --wait, create returns when the request is decided: it succeeds if it
was approved and fails (exit status 1) if it was denied or expired.`,
		Example: `  tunnel request create --role dba --for 2h --reason "INC-123: fix replication" --wait`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role == "" || reason == "" || dur <= 0 {
				return fmt.Errorf("give the role, the duration and the reason: %s --role ROLE --for 2h --reason \"...\"", cmd.CommandPath())
			}
			return requestCall(cmd.Context(), env, func(s *session) error {
				r, err := s.client.CreateRequest(cmd.Context(), api.CreateAccessRequest{Role: role, Duration: api.Duration(dur), Reason: reason})
				if err != nil {
					return err
				}
				if !wait {
					if asJSON {
						return printJSON(cmd.OutOrStdout(), r)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "Request %s for role %s (%s) is pending: an approver runs tunnel request approve %s.\n", r.ID, r.Role, dur, r.ID)
					return nil
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Request %s for role %s (%s) is pending; waiting for an approver (Ctrl-C stops waiting, not the request)...\n", r.ID, r.Role, dur)
				ctx := cmd.Context()
				if timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, timeout)
					defer cancel()
				}
				got, err := s.client.WaitRequest(ctx, r.ID)
				if err != nil {
					if ctx.Err() != nil && cmd.Context().Err() == nil {
						return fmt.Errorf("request %s is still pending after %s: tunnel request show %s tells its state later", r.ID, timeout, r.ID)
					}
					return fmt.Errorf("waiting for request %s: %w", r.ID, err)
				}
				if asJSON {
					if err := printJSON(cmd.OutOrStdout(), got); err != nil {
						return err
					}
					_, err := requestOutcome(got)
					return err
				}
				msg, err := requestOutcome(got)
				if err != nil {
					return err
				}
				fmt.Fprint(cmd.OutOrStdout(), msg)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "the role asked for")
	f.DurationVar(&dur, "for", 0, "how long (from the approval), such as 2h")
	f.StringVar(&reason, "reason", "", "why, for the approvers (an incident or ticket)")
	f.BoolVar(&wait, "wait", false, "wait until the request is decided")
	f.DurationVar(&timeout, "timeout", 0, "with --wait, stop waiting after this long (default: wait until decided)")
	f.BoolVar(&asJSON, "json", false, "print the request as JSON")
	return cmd
}
