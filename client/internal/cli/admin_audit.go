package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

func newAdminAuditCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read and verify the audit log",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAuditLsCmd(env), newAuditVerifyCmd(env))
	return cmd
}

func newAuditLsCmd(env Env) *cobra.Command {
	var after int64
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [--after N] [--limit N]",
		Short: "List audit events, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The gateway answers at most api.AuditPage events at a time:
			// page through the log from after, up to limit (0: all).
			var evs []audit.Event
			for {
				want := api.AuditPage
				if limit > 0 {
					want = min(want, limit-len(evs))
				}
				q := url.Values{}
				q.Set("after", strconv.FormatInt(after, 10))
				q.Set("limit", strconv.Itoa(want))
				var page []audit.Event
				if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAudit, q, nil, &page); err != nil {
					return err
				}
				evs = append(evs, page...)
				if len(page) < want || len(page) == 0 || (limit > 0 && len(evs) >= limit) {
					break
				}
				after = page[len(page)-1].Seq
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), evs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tACTOR\tSUBJECT\tOUTCOME\tREASON\tSOURCE")
			for _, e := range evs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, fmtTime(e.Time), e.Type, e.Actor,
					dash(e.Subject), e.Outcome, dash(e.Reason), dash(e.SourceIP))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Int64Var(&after, "after", 0, "only events after this sequence number")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many events")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newAuditVerifyCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Walk the audit log's hash chain and report the first broken link",
		Long: `verify checks every event's hash and its link to the one before, and that the
log ends at the last event the gateway recorded apart from it (the head), so
that events deleted from the end are found too, even with the head blanked.
It exits non-zero when the chain is broken, naming the first bad event.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v api.AuditVerify
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAuditVerify, nil, nil, &v); err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), v); err != nil {
					return err
				}
			} else if v.OK {
				fmt.Fprintf(cmd.OutOrStdout(), "Audit log intact: %d events, head %s.\n", v.Events, v.Head)
			}
			if !v.OK {
				return errors.New(fmt.Sprintf("audit chain broken at event %d: %s", v.BrokenAt, v.Problem))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
