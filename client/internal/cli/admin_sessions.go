package cli

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/asciicast"
)

func newAdminSessionsCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List, revoke and replay bastion sessions",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSessionsLsCmd(env), newSessionsRevokeCmd(env), newSessionsPlayCmd(env))
	return cmd
}

func newSessionsLsCmd(env Env) *cobra.Command {
	var active, asJSON bool
	var user, node string
	var limit int
	cmd := &cobra.Command{
		Use:   "ls [--active] [--user NAME] [--node NODE]",
		Short: "List sessions, newest first: who, where, since, until, bytes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if active {
				q.Set("active", "1")
			}
			if user != "" {
				q.Set("user", user)
			}
			if node != "" {
				q.Set("node", node)
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			var list []api.Session
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAdminSessions, q, nil, &list); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUSER\tLOGIN@NODE\tSTATE\tSINCE\tUNTIL\tBYTES IN/OUT\tREASON")
			for _, s := range list {
				until := fmtTime(s.Deadline)
				if s.EndedAt != nil {
					until = fmtTime(*s.EndedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s@%s\t%s\t%s\t%s\t%d/%d\t%s\n", s.ID, s.User, s.Login, s.Node, s.State,
					fmtTime(s.CreatedAt), until, s.BytesIn, s.BytesOut, dash(s.EndReason))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&active, "active", false, "only active sessions")
	cmd.Flags().StringVar(&user, "user", "", "only this user's sessions")
	cmd.Flags().StringVar(&node, "node", "", "only sessions on this node")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newSessionsRevokeCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "End a session now: its live SSH connection closes with \"access revoked by an administrator\"",
		Long: `revoke ends the session ID now: its live SSH connection closes with "access
revoked by an administrator", and the SSH certificate it was opened with is
revoked (it is in the KRL), so that it opens nothing more. For a session
opened through the jump host (ssh -J), that certificate is the user's login
certificate: their ssh -J and plain OpenSSH access ends until they run
tunnel login again.`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s api.Session
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathAdminSessions+"/"+url.PathEscape(args[0])+"/revoke", nil, nil, &s); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked session %s (%s@%s of %s), and the SSH certificate it was opened with (through the jump host: %s's login certificate, until they log in again).\n",
				s.ID, s.Login, s.Node, s.User, s.User)
			return nil
		},
	}
}

func newSessionsPlayCmd(env Env) *cobra.Command {
	var speed float64
	var maxIdle time.Duration
	var raw bool
	cmd := &cobra.Command{
		Use:   "play ID",
		Short: "Replay a recorded session in this terminal",
		Long:  "play fetches a session's recording (asciicast v2) and replays it with its timing. --raw prints the recording itself, for asciinema or an archive.",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := loggedIn(env)
			if err != nil {
				return err
			}
			defer s.Close()
			var buf bytes.Buffer
			if err := s.client.DoInto(cmd.Context(), http.MethodGet, api.PathAdminSessions+"/"+url.PathEscape(args[0])+"/recording", &buf); err != nil {
				return err
			}
			if raw {
				_, err := cmd.OutOrStdout().Write(buf.Bytes())
				return err
			}
			return asciicast.Play(cmd.Context(), &buf, cmd.OutOrStdout(), speed, maxIdle, nil)
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 1, "playback speed (2 is twice as fast)")
	cmd.Flags().DurationVar(&maxIdle, "max-idle", 2*time.Second, "cap on pauses between outputs")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the asciicast v2 file instead of replaying it")
	return cmd
}
