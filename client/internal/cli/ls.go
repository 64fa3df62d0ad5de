package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the nodes and services you may reach",
		Long: `ls lists the nodes (VMs) your roles let you reach and, on each, the
services you may open with tunnel proxy db NODE/SERVICE. A node's services
are known only while its agent is connected to the gateway.`,
		Example: "  tunnel ls\n  tunnel ls --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var nodes []api.Node
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathNodes, nil, nil, &nodes); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), nodes)
			}
			if len(nodes) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "Your roles let you reach no node yet: ask an admin for a role with --node or --service.")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tONLINE\tSERVICES")
			for _, n := range nodes {
				online := "no"
				if n.Online {
					online = "yes"
				}
				services := orNone(n.Services)
				if !n.Online && len(n.Services) == 0 {
					services = "(known while its agent is connected)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, online, services)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
