package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newRequestCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Ask for a role for a while, and approve, deny or revoke such requests",
		Long: `request is just-in-time access: a user asks for a role for a while with a
reason (create); the holders of a role that approves it (an admin made it
with tunnel admin roles add NAME --approve ROLE) see the pending requests
(ls) and approve or deny them (approve, deny). Once approved, the role is
the requester's until the end of the window, at most the role's max TTL: the
gateway applies it at once to tunnel ls, ssh and proxy, and the next tunnel
login carries it in the SSH certificate. At the end of the window, or when
an approver, an admin or the requester revokes it (revoke), every live
session and stream that only the role allowed is closed. Every step is an
audit event. See docs/REQUESTS.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newRequestCreateCmd(env), newRequestLsCmd(env), newRequestShowCmd(env),
		newRequestApproveCmd(env), newRequestDenyCmd(env), newRequestRevokeCmd(env))
	return cmd
}

// requestCall runs fn with a logged-in client; a refusal becomes its
// message.
func requestCall(ctx context.Context, env Env, fn func(s *session) error) error {
	s, err := loggedIn(env)
	if err != nil {
		return err
	}
	defer s.Close()
	err = fn(s)
	var ae *api.Error
	if errors.As(err, &ae) {
		return errors.New(ae.Message)
	}
	return err
}

// printRequest prints one request's fields, one a line.
func printRequest(w io.Writer, r api.AccessRequest) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\n", r.ID)
	fmt.Fprintf(tw, "User:\t%s\n", r.User)
	fmt.Fprintf(tw, "Role:\t%s\n", r.Role)
	fmt.Fprintf(tw, "For:\t%s\n", time.Duration(r.Duration))
	fmt.Fprintf(tw, "Reason:\t%s\n", r.Reason)
	fmt.Fprintf(tw, "State:\t%s\n", r.State)
	fmt.Fprintf(tw, "Created:\t%s\n", fmtTime(r.CreatedAt))
	if r.State == api.RequestPending {
		fmt.Fprintf(tw, "Expires if undecided:\t%s\n", fmtTime(r.PendingUntil))
	}
	if r.DecidedBy != "" {
		fmt.Fprintf(tw, "Decided:\t%s by %s\n", fmtTime(r.DecidedAt), r.DecidedBy)
	}
	if r.Comment != "" {
		fmt.Fprintf(tw, "Comment:\t%s\n", r.Comment)
	}
	if !r.Start.IsZero() {
		fmt.Fprintf(tw, "Window:\t%s to %s\n", fmtTime(r.Start), fmtTime(r.End))
	}
	if !r.EndedAt.IsZero() {
		by := r.EndedBy
		if r.EndReason != "" {
			by += " (" + r.EndReason + ")"
		}
		fmt.Fprintf(tw, "Ended:\t%s by %s\n", fmtTime(r.EndedAt), by)
	}
	return tw.Flush()
}

// requestOutcome is the sentence that tells the requester how their
// request ended up, and an error unless it was approved.
func requestOutcome(r api.AccessRequest) (string, error) {
	comment := ""
	if r.Comment != "" {
		comment = fmt.Sprintf(" (%q)", r.Comment)
	}
	switch r.State {
	case api.RequestApproved:
		return fmt.Sprintf("Request %s approved by %s%s: role %s is yours until %s.\n"+
			"tunnel ls, ssh and proxy use it now; run tunnel login for an SSH certificate that carries its logins.\n",
			r.ID, r.DecidedBy, comment, r.Role, fmtTime(r.End)), nil
	case api.RequestDenied:
		return "", fmt.Errorf("request %s was denied by %s%s", r.ID, r.DecidedBy, comment)
	case api.RequestExpired:
		return "", fmt.Errorf("request %s expired without a decision: ask again with tunnel request create", r.ID)
	case api.RequestRevoked:
		return "", fmt.Errorf("request %s was revoked by %s", r.ID, r.EndedBy)
	}
	return fmt.Sprintf("Request %s is %s.\n", r.ID, r.State), nil
}
