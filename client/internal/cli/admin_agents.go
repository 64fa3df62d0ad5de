package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminAgentsCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List, lock and unlock agents",
		Long: `An agent runs on each VM and keeps a connection to the gateway. Enrol a new
one with a join token (tunnel admin tokens create --agent NAME).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAgentsLsCmd(env),
		newAgentsActionCmd(env, "lock", "Lock an agent: its new connections, certificate renewals and enrolments are refused"),
		newAgentsActionCmd(env, "unlock", "Unlock an agent"))
	return cmd
}

func newAgentsLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List agents: connected or not, direct path on or off, the streams they have open (direct or relayed, on this gateway), their services",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var agents []api.Agent
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAgents, nil, nil, &agents); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), agents)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tONLINE\tSINCE/LAST SEEN\tDIRECT\tSTREAMS\tSERVICES")
			for _, a := range agents {
				state := "active"
				if a.Locked {
					state = "locked"
				}
				online, when := "no", "never"
				switch {
				case a.Online && a.Since != nil:
					online, when = "yes", fmtTime(*a.Since)
				case a.Online:
					online, when = "yes", "-"
				case a.LastSeen != nil:
					when = fmtTime(*a.LastSeen)
				}
				direct, streams := "-", "-"
				if a.Online {
					direct = a.Direct
					streams = fmt.Sprintf("%d direct, %d relayed", a.DirectStreams, a.RelayedStreams)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, state, online, when, direct, streams, orNone(a.Services))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newAgentsActionCmd(env Env, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathAgents+"/"+url.PathEscape(args[0])+"/"+verb, nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Agent %s: %sed.\n", args[0], verb)
			return nil
		},
	}
}
