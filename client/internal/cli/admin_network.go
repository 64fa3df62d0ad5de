package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminNetworkCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Allow or deny source networks on the gateways' listeners",
		Long: `network rules say which source networks may connect to the gateways of
the cluster, per listener: the HTTPS API (api), QUIC for agents and clients
(quic) and the SSH jump host (ssh), or all of them (all, the default).

A deny rule that matches always wins. If any allow rule applies to a
listener, that listener admits only the networks its allow rules match (an
allow-list); with none, it admits every source not denied. Rules take effect
on every gateway within seconds, at the earliest point: a TCP connection is
reset as it is accepted, a QUIC connection is refused before its handshake,
and live connections from a source the new rules refuse are cut.

A change that would refuse your own address on the API is refused unless
you add --force. Every change is in the audit log. See docs/NETWORK.md.`,
		Example: `  tunnel admin network deny 203.0.113.0/24 --comment "scanner"
  tunnel admin network allow 10.0.0.0/8 --listener ssh
  tunnel admin network ls
  tunnel admin network rm 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newNetworkAddCmd(env, "allow"), newNetworkAddCmd(env, "deny"), newNetworkLsCmd(env), newNetworkRmCmd(env))
	return cmd
}

func newNetworkAddCmd(env Env, effect string) *cobra.Command {
	var listener, comment string
	var force, asJSON bool
	short := "Add a network to a listener's allow-list (then only allowed networks get in)"
	if effect == "deny" {
		short = "Refuse a network on a listener, whatever allows it"
	}
	cmd := &cobra.Command{
		Use:   effect + " CIDR [--listener api|quic|ssh|all] [--comment TEXT]",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := api.NetworkRuleRequest{Effect: effect, CIDR: args[0], Listener: listener, Comment: comment, Force: force}
			var out api.NetworkRule
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathAdminNetwork, nil, in, &out); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Added network rule %d: %s %s on %s.\n", out.ID, out.Effect, out.CIDR, out.Listener)
			return nil
		},
	}
	cmd.Flags().StringVar(&listener, "listener", "all", "the listener the rule applies to: api, quic, ssh or all")
	cmd.Flags().StringVar(&comment, "comment", "", "why the rule exists (shown by ls, recorded in the audit log)")
	cmd.Flags().BoolVar(&force, "force", false, "add the rule even if it refuses your own address on the API")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new rule as JSON")
	return cmd
}

func newNetworkLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List network rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rules []api.NetworkRule
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAdminNetwork, nil, nil, &rules); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rules)
			}
			if len(rules) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No network rules: every source may connect to every listener.")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEFFECT\tCIDR\tLISTENER\tCOMMENT\tCREATED BY\tCREATED")
			for _, r := range rules {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Effect, r.CIDR, r.Listener, dash(r.Comment), r.CreatedBy, fmtTime(r.CreatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newNetworkRmCmd(env Env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a network rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return fmt.Errorf("%q is not a rule id: give the number tunnel admin network ls shows", args[0])
			}
			var q url.Values
			if force {
				q = url.Values{"force": {"true"}}
			}
			if err := adminCall(cmd.Context(), env, http.MethodDelete, api.PathAdminNetwork+"/"+strconv.FormatInt(id, 10), q, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed network rule %d.\n", id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the rule even if your own address is then refused on the API")
	return cmd
}
