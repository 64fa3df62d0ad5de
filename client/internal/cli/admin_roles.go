package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminRolesCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "roles",
		Short: "Add, list, update and remove roles",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newRolesAddCmd(env), newRolesLsCmd(env), newRolesUpdateCmd(env), newRolesRmCmd(env))
	return cmd
}

func newRolesAddCmd(env Env) *cobra.Command {
	var logins, nodes, services, approve, sources []string
	var maxTTL time.Duration
	var admin, asJSON, portFwd, agentFwd, sudo bool
	cmd := &cobra.Command{
		Use:   "add NAME [--login L]... [--node PATTERN]... [--service NODE/SERVICE]... [--max-ttl D] [--admin]",
		Short: "Add a role",
		Long: `add creates a role. --login names an OS login (SSH principal) the role
grants; --node names the nodes its holders may reach over SSH (a name, "*"
or a glob such as "web-*"); --service names the services they may reach
through a tunnel, as NODE/SERVICE where either part may be "*" or a glob;
--max-ttl caps the lifetime of its holders' certificates (default: the
cluster maximum); --admin grants the admin API; --approve names a role
whose access requests (tunnel request) its holders may approve or deny;
--sudo lets its logins use sudo on the node for the length of an SSH
session it allows; --source limits the role to callers connecting from a
network (a CIDR such as 10.0.0.0/8, or an address): from anywhere else it
does not count, and the SSH certificates it grants logins in carry the
networks as OpenSSH's source-address. A role grants nothing it does not
name.`,
		Example: `  tunnel admin roles add dev --login ubuntu --login deploy --node "web-*" --max-ttl 8h
  tunnel admin roles add dba --service db-1/postgres --service "db-*/mysql"
  tunnel admin roles add oncall-lead --approve dba
  tunnel admin roles add office --login ubuntu --node "*" --source 10.0.0.0/8 --source 192.168.1.0/24`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkLength("--max-ttl", maxTTL, "the cluster maximum"); err != nil {
				return err
			}
			in := api.Role{Name: args[0], Logins: logins, Nodes: nodes, Services: services, MaxTTL: api.Duration(maxTTL), Admin: admin,
				PortForwarding: portFwd, AgentForwarding: agentFwd, Approve: approve, Sudo: sudo, Sources: sources}
			var out api.Role
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathRoles, nil, in, &out); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Added role %s.\n", out.Name)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&logins, "login", nil, "OS login the role grants (repeatable)")
	cmd.Flags().StringArrayVar(&nodes, "node", nil, `node pattern for SSH: a name, "*" or a glob (repeatable)`)
	cmd.Flags().StringArrayVar(&services, "service", nil, "NODE/SERVICE pattern reachable through tunnels (repeatable)")
	cmd.Flags().DurationVar(&maxTTL, "max-ttl", 0, "longest certificate lifetime for holders (default: cluster maximum)")
	cmd.Flags().BoolVar(&admin, "admin", false, "grant the admin API")
	cmd.Flags().BoolVar(&portFwd, "allow-port-forwarding", false, "allow ssh -L/-W port forwarding in the role's SSH sessions")
	cmd.Flags().BoolVar(&agentFwd, "allow-agent-forwarding", false, "allow ssh -A agent forwarding in the role's SSH sessions")
	cmd.Flags().StringSliceVar(&approve, "approve", nil, "role whose access requests holders may approve or deny (repeatable)")
	cmd.Flags().BoolVar(&sudo, "sudo", false, "let the role's logins use sudo on the node for the length of an SSH session")
	cmd.Flags().StringSliceVar(&sources, "source", nil, "network (CIDR) the role counts from (repeatable; default: anywhere)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newRolesLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var roles []api.Role
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathRoles, nil, nil, &roles); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), roles)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tLOGINS\tNODES\tSERVICES\tMAX TTL\tADMIN\tAPPROVES\tSUDO\tSOURCES")
			for _, r := range roles {
				ttl := "cluster max"
				if r.MaxTTL != 0 {
					ttl = time.Duration(r.MaxTTL).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\t%v\t%s\n", r.Name, orNone(r.Logins), orNone(r.Nodes), orNone(r.Services), ttl, r.Admin, orNone(r.Approve), r.Sudo, sourcesOf(r))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newRolesRmCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a role (refused while users hold it)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminCall(cmd.Context(), env, http.MethodDelete, api.PathRoles+"/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed role %s.\n", args[0])
			return nil
		},
	}
}

func newRolesUpdateCmd(env Env) *cobra.Command {
	var logins, nodes, services, approve, sources []string
	var maxTTL time.Duration
	var admin, asJSON, portFwd, agentFwd, sudo bool
	cmd := &cobra.Command{
		Use:   "update NAME [--login L]... [--node PATTERN]... [--service NODE/SERVICE]... [--max-ttl D] [--admin[=false]]",
		Short: "Change a role: only the flags given change",
		Long: `update changes a role in place, with the flags of add. Only the flags given
change: a list flag (--login, --node, --service) replaces the whole list, so
give every value the role should keep, or an empty value (--node "") to clear
it; --max-ttl 0 means the cluster maximum; --admin=false, and
--allow-port-forwarding=false and --allow-agent-forwarding=false, take a
grant away; --source replaces the role's networks (--source "" lets it
count from anywhere again). Live sessions and streams that a change no
longer allows (from their source too) are closed.

It takes effect at once: every new session and stream is decided with the
role as it is now. What a login certificate carries (the SSH logins that
ssh -J and plain OpenSSH present) changes at the holders' next login. The
change is audited (role.updated).`,
		Example: `  tunnel admin roles update dev --login ubuntu --login deploy
  tunnel admin roles update dev --node "" --max-ttl 2h
  tunnel admin roles update ops --admin=false
  tunnel admin roles update office --source 10.0.0.0/8`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var in api.RoleUpdate
			if f.Changed("login") {
				in.Logins = nonEmpty(logins)
			}
			if f.Changed("node") {
				in.Nodes = nonEmpty(nodes)
			}
			if f.Changed("service") {
				in.Services = nonEmpty(services)
			}
			if f.Changed("max-ttl") {
				if err := checkLength("--max-ttl", maxTTL, "the cluster maximum"); err != nil {
					return err
				}
				d := api.Duration(maxTTL)
				in.MaxTTL = &d
			}
			if f.Changed("admin") {
				in.Admin = &admin
			}
			if f.Changed("allow-port-forwarding") {
				in.PortForwarding = &portFwd
			}
			if f.Changed("allow-agent-forwarding") {
				in.AgentForwarding = &agentFwd
			}
			if f.Changed("approve") {
				in.Approve = nonEmpty(approve)
			}
			if f.Changed("sudo") {
				in.Sudo = &sudo
			}
			if f.Changed("source") {
				in.Sources = nonEmpty(sources)
			}
			if in.Empty() {
				return fmt.Errorf("nothing to change: give at least one of --login, --node, --service, --max-ttl, --admin, --allow-port-forwarding, --allow-agent-forwarding, --approve, --sudo and --source; see %s --help", cmd.CommandPath())
			}
			var out api.Role
			if err := adminCall(cmd.Context(), env, http.MethodPatch, api.RolePath(args[0]), nil, in, &out); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Updated role %s; it applies now (the SSH logins in its holders' certificates at their next login).\n", out.Name)
			return printRole(cmd.OutOrStdout(), out)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&logins, "login", nil, `OS login the role grants (repeatable; replaces the list, "" clears it)`)
	f.StringArrayVar(&nodes, "node", nil, `node pattern for SSH (repeatable; replaces the list, "" clears it)`)
	f.StringArrayVar(&services, "service", nil, `NODE/SERVICE pattern (repeatable; replaces the list, "" clears it)`)
	f.DurationVar(&maxTTL, "max-ttl", 0, "longest certificate lifetime for holders (0: cluster maximum)")
	f.BoolVar(&admin, "admin", false, "grant the admin API (--admin=false takes it away)")
	f.BoolVar(&portFwd, "allow-port-forwarding", false, "allow ssh -L/-W port forwarding (=false forbids it)")
	f.BoolVar(&agentFwd, "allow-agent-forwarding", false, "allow ssh -A agent forwarding (=false forbids it)")
	f.StringSliceVar(&approve, "approve", nil, `role whose access requests holders may decide (repeatable; replaces the list, "" clears it)`)
	f.BoolVar(&sudo, "sudo", false, "let the role's logins use sudo for the session (=false takes it away)")
	f.StringSliceVar(&sources, "source", nil, `network (CIDR) the role counts from (repeatable; replaces the list, "" means anywhere)`)
	f.BoolVar(&asJSON, "json", false, "print the role as JSON")
	return cmd
}

// nonEmpty returns the values that are not empty, as a list to send: an
// empty flag value clears the list.
func nonEmpty(values []string) *[]string {
	out := []string{}
	for _, v := range values {
		if v != "" {
			out = append(out, v)
		}
	}
	return &out
}

// printRole prints a role's fields, one a line.
func printRole(w io.Writer, r api.Role) error {
	ttl := "cluster max"
	if r.MaxTTL != 0 {
		ttl = time.Duration(r.MaxTTL).String()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  logins:\t%s\n", orNone(r.Logins))
	fmt.Fprintf(tw, "  nodes:\t%s\n", orNone(r.Nodes))
	fmt.Fprintf(tw, "  services:\t%s\n", orNone(r.Services))
	fmt.Fprintf(tw, "  max TTL:\t%s\n", ttl)
	fmt.Fprintf(tw, "  admin:\t%s\n", yesNo(r.Admin))
	fmt.Fprintf(tw, "  port forwarding:\t%s\n", yesNo(r.PortForwarding))
	fmt.Fprintf(tw, "  agent forwarding:\t%s\n", yesNo(r.AgentForwarding))
	fmt.Fprintf(tw, "  approves requests for:\t%s\n", orNone(r.Approve))
	fmt.Fprintf(tw, "  sudo:\t%s\n", yesNo(r.Sudo))
	fmt.Fprintf(tw, "  sources:\t%s\n", sourcesOf(r))
	return tw.Flush()
}

// sourcesOf lists the networks a role counts from.
func sourcesOf(r api.Role) string {
	if len(r.Sources) == 0 {
		return "anywhere"
	}
	return strings.Join(r.Sources, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// checkLength refuses a negative length given with flag before it is
// sent; zero says what 0 means.
func checkLength(flag string, d time.Duration, zero string) error {
	if d < 0 {
		return fmt.Errorf("%s %s is negative: give a length such as 8h (0: %s)", flag, d, zero)
	}
	return nil
}
