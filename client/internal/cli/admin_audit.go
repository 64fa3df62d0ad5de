package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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
	var asJSON, follow bool
	var sel auditSelectFlags
	cmd := &cobra.Command{
		Use:   "ls [--after N] [--limit N] [--type T] [--user U] [--since TIME] [--follow] [--json]",
		Short: "List audit events, oldest first; --follow streams new ones",
		Long: `ls lists audit events, oldest first. --type (repeatable or comma-separated;
login.* matches every login event), --user (events whose actor or subject is
the user) and --since (a time, 2026-01-02T15:04:05Z, or a duration back from
now, 24h) select events on the gateway.

--follow keeps going: it prints the events any gateway of the cluster
commits from now on (from --after N, or --since, if given) as they come,
until interrupted. When the gateway cannot be reached it retries, with
another gateway of the cluster if there is one, and goes on from the last
event printed, so nothing is printed twice or missed. With --json, --follow
prints one JSON object per line (JSON Lines), for a SIEM or log shipper.`,
		Example: `  tunnel admin audit ls --type login.failure --since 24h
  tunnel admin audit ls --follow --json | vector ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := sel.query(env.Now())
			if err != nil {
				return err
			}
			if follow {
				start := api.AuditAfterEnd
				if cmd.Flags().Changed("after") || sel.since != "" {
					start = strconv.FormatInt(after, 10)
				}
				return followAudit(cmd, env, q, start, asJSON)
			}
			var evs []audit.Event
			if len(q) == 0 {
				evs, err = auditPages(cmd, env, after, limit)
			} else {
				evs, err = auditSelected(cmd, env, q, after, limit)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), evs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, auditHeader)
			for _, e := range evs {
				fmt.Fprintln(tw, auditRow(e))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Int64Var(&after, "after", 0, "only events after this sequence number")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many events")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (with --follow: one object per line)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they are committed")
	cmd.Flags().StringSliceVar(&sel.types, "type", nil, "only events of these types (login.* for a prefix)")
	cmd.Flags().StringVar(&sel.user, "user", "", "only events whose actor or subject is this user")
	cmd.Flags().StringVar(&sel.since, "since", "", "only events at or after this time (RFC 3339) or this long ago (24h)")
	return cmd
}

const auditHeader = "SEQ\tTIME\tTYPE\tACTOR\tSUBJECT\tOUTCOME\tREASON\tSOURCE"

func auditRow(e audit.Event) string {
	return fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s", e.Seq, fmtTime(e.Time), e.Type, e.Actor,
		dash(e.Subject), e.Outcome, dash(e.Reason), dash(e.SourceIP))
}

// auditSelectFlags are ls's filters.
type auditSelectFlags struct {
	types       []string
	user, since string
}

// query returns the filters as query parameters (none: empty).
func (f auditSelectFlags) query(now time.Time) (url.Values, error) {
	q := url.Values{}
	if len(f.types) > 0 {
		q.Set(api.AuditQueryType, strings.Join(f.types, ","))
	}
	if f.user != "" {
		q.Set(api.AuditQueryUser, f.user)
	}
	if f.since != "" {
		t, err := time.Parse(time.RFC3339Nano, f.since)
		if err != nil {
			d, derr := time.ParseDuration(f.since)
			if derr != nil || d < 0 {
				return nil, fmt.Errorf("--since %q is neither a time (2026-01-02T15:04:05Z) nor a duration back from now (24h)", f.since)
			}
			t = now.Add(-d)
		}
		q.Set(api.AuditQuerySince, t.UTC().Format(time.RFC3339Nano))
	}
	return q, nil
}

// auditPages reads the log from after, up to limit (0: all), a page at a
// time (the gateway answers at most api.AuditPage events at once).
func auditPages(cmd *cobra.Command, env Env, after int64, limit int) ([]audit.Event, error) {
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
			return nil, err
		}
		evs = append(evs, page...)
		if len(page) < want || len(page) == 0 || (limit > 0 && len(evs) >= limit) {
			return evs, nil
		}
		after = page[len(page)-1].Seq
	}
}

// auditSelected reads the events the filters q select, from after, up to
// limit (0: all): the gateway filters, and says where each answer's scan
// stopped.
func auditSelected(cmd *cobra.Command, env Env, q url.Values, after int64, limit int) ([]audit.Event, error) {
	s, err := loggedIn(env)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var evs []audit.Event
	for {
		want := api.AuditPage
		if limit > 0 {
			want = min(want, limit-len(evs))
		}
		q.Set("after", strconv.FormatInt(after, 10))
		q.Set("limit", strconv.Itoa(want))
		var page api.AuditEvents
		if err := s.call(cmd.Context(), http.MethodGet, api.PathAudit, q, nil, &page); err != nil {
			return nil, err
		}
		evs = append(evs, page.Events...)
		if page.Next <= after || (limit > 0 && len(evs) >= limit) {
			return evs, nil
		}
		after = page.Next
	}
}

// followAudit prints the selected events from start (a seq, or
// api.AuditAfterEnd) as they are committed, until the command's context
// ends. It long-polls the gateway; when a call fails for want of a
// gateway or its store, it says so once on stderr and retries with a
// growing pause, from the last event printed.
func followAudit(cmd *cobra.Command, env Env, q url.Values, start string, asJSON bool) error {
	ctx := cmd.Context()
	s, err := loggedIn(env)
	if err != nil {
		return err
	}
	defer s.Close()
	out := cmd.OutOrStdout()
	enc := json.NewEncoder(out)
	if !asJSON {
		fmt.Fprintln(out, strings.ReplaceAll(auditHeader, "\t", "  "))
	}
	after := start
	pause := time.Duration(0)
	down := false
	for {
		q.Set("after", after)
		q.Set("limit", strconv.Itoa(api.AuditPage))
		q.Set(api.AuditQueryWait, api.AuditMaxWait.String())
		var page api.AuditEvents
		err := s.client.Do(ctx, http.MethodGet, api.PathAudit, q, nil, &page)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ae *api.Error
			if errors.As(err, &ae) && ae.Code != api.CodeStoreUnavailable && ae.Code != api.CodeInternal {
				return errors.New(ae.Message)
			}
			if !down {
				fmt.Fprintf(cmd.ErrOrStderr(), "tunnel: lost the gateway (%v); retrying from event %s\n", err, after)
				down = true
			}
			pause = min(max(2*pause, 500*time.Millisecond), 10*time.Second)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pause):
			}
			continue
		}
		if down {
			fmt.Fprintf(cmd.ErrOrStderr(), "tunnel: reconnected; following from event %s\n", after)
			down = false
		}
		pause = 0
		for _, e := range page.Events {
			if asJSON {
				if err := enc.Encode(e); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(out, strings.ReplaceAll(auditRow(e), "\t", "  "))
			}
		}
		after = strconv.FormatInt(page.Next, 10)
	}
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
