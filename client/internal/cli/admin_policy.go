package cli

import (
	"fmt"
	"net/http"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminPolicyCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Allow or deny agents' streams to services",
		Long: `policy rules say which agents may reach which services through the
gateway. Nothing is allowed that no rule allows (default deny), and a
matching deny rule wins over every allow rule.

--from is an agent name, "*" or a glob such as "web-*"; --to is
NODE/SERVICE, where either part may be "*" or a glob ("db-*/postgres").
Users reach services through their roles (tunnel admin roles add --service),
not through these rules.`,
		Example: `  tunnel admin policy allow --from app-1 --to db-1/postgres
  tunnel admin policy deny --from "web-*" --to "*/*"
  tunnel admin policy ls
  tunnel admin policy rm 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newPolicyAddCmd(env, "allow"), newPolicyAddCmd(env, "deny"), newPolicyLsCmd(env), newPolicyRmCmd(env))
	return cmd
}

func newPolicyAddCmd(env Env, effect string) *cobra.Command {
	var from, to string
	var asJSON bool
	short := "Add a rule that lets agents open streams to services"
	if effect == "deny" {
		short = "Add a rule that refuses agents' streams to services, whatever allows them"
	}
	cmd := &cobra.Command{
		Use:   effect + " --from AGENT --to NODE/SERVICE",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := api.PolicyRule{Effect: effect, From: from, To: to}
			var out api.PolicyRule
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathPolicy, nil, in, &out); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Added rule %d: %s --from %s --to %s.\n", out.ID, out.Effect, out.From, out.To)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", `agent name, "*" or a glob such as "web-*" (required)`)
	cmd.Flags().StringVar(&to, "to", "", `NODE/SERVICE, either part may be "*" or a glob (required)`)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new rule as JSON")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func newPolicyLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List policy rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rules []api.PolicyRule
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathPolicy, nil, nil, &rules); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rules)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEFFECT\tFROM\tTO\tCREATED BY\tCREATED")
			for _, r := range rules {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Effect, r.From, r.To, dash(r.CreatedBy), fmtTime(r.CreatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newPolicyRmCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID",
		Short:   "Remove a policy rule by its ID (see policy ls)",
		Example: "  tunnel admin policy rm 3",
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return fmt.Errorf("%q is not a rule ID: give the number tunnel admin policy ls shows", args[0])
			}
			if err := adminCall(cmd.Context(), env, http.MethodDelete, api.PathPolicy+"/"+strconv.FormatInt(id, 10), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed rule %d.\n", id)
			return nil
		},
	}
}
