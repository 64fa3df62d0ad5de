package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminGatewaysCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateways",
		Short: "List the gateways of the cluster",
		Long: `Every gateway of a cluster (several share one PostgreSQL store) records a
heartbeat every 10 s by default; one is alive while its last heartbeat is
within three of its intervals. A gateway shut down cleanly leaves the list.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newGatewaysLsCmd(env))
	return cmd
}

func newGatewaysLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List gateways: id, addresses, version, last heartbeat and whether alive",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list api.GatewayList
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAdminGateways, nil, nil, &list); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list.Gateways)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tALIVE\tAPI\tQUIC\tSSH\tVERSION\tLAST HEARTBEAT")
			for _, g := range list.Gateways {
				alive := "no"
				if g.Alive {
					alive = "yes"
				}
				ssh := g.SSHAddr
				if ssh == "" {
					ssh = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, alive, g.APIAddr, g.QUICAddr, ssh, g.Version, fmtTime(g.LastHeartbeat))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
