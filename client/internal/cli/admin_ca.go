package cli

import (
	"fmt"
	"io"
	"net/http"
	"sort"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminCACmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Rotate the cluster's certificate authorities",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newCARotateCmd(env))
	return cmd
}

func newCARotateCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate start|status|activate|finish [--kind x509|ssh-user|ssh-host|all]",
		Short: "Replace a CA key without downtime, in three steps",
		Long: `rotate replaces the key of one of the cluster's three CAs (x509: agents',
users' and gateways' TLS certificates; ssh-user: SSH user certificates;
ssh-host: SSH host certificates), or of all three, without cutting anything:

  start     a new key is added: every gateway trusts it alongside the old one,
            and agents and users get the new trust bundle with their next
            certificate (renewal, login). The old key still signs.
  status    where each rotation stands: how many certificates issued before
            the start are still valid (their holders have not renewed or
            logged in since), and when the old key's last certificate expires.
  activate  the new key signs. Refused while certificates issued before the
            start are still valid, unless --force.
  finish    the old key is removed: what it signed is refused everywhere.
            Refused while a certificate it signed is still valid, unless
            --force.

Each step is safe to repeat and is recorded in the audit log. Nodes running
their own sshd with TrustedUserCAKeys should list the new user CA (tunnel ca
--type ssh-user > FILE) before finish. See docs/CA-ROTATION.md.`,
		Example: `  tunnel admin ca rotate start
  tunnel admin ca rotate status
  tunnel admin ca rotate activate --kind ssh-user
  tunnel admin ca rotate finish --kind all`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"start", "status", "activate", "finish"},
	}
	var (
		kind          string
		force, asJSON bool
	)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var out api.CARotationStatus
		switch step := args[0]; step {
		case "status":
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathAdminCARotation, nil, nil, &out); err != nil {
				return err
			}
		case api.CARotateStart, api.CARotateActivate, api.CARotateFinish:
			in := api.CARotationRequest{Kind: kind, Force: force}
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathAdminCARotation+"/"+step, nil, in, &out); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%q is not a rotation step: use start, status, activate or finish", step)
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		printCARotation(cmd.OutOrStdout(), out)
		return nil
	}
	cmd.Flags().StringVar(&kind, "kind", "all", "the CA: x509, ssh-user, ssh-host or all")
	cmd.Flags().BoolVar(&force, "force", false, "activate or finish even though it is not safe yet (recorded in the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

// printCARotation prints what a step did and where each CA stands.
func printCARotation(w io.Writer, st api.CARotationStatus) {
	kinds := make([]string, 0, len(st.Done))
	for k := range st.Done {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "%s: %s\n", k, st.Done[k])
	}
	if len(kinds) > 0 {
		fmt.Fprintln(w)
	}
	for _, k := range st.Kinds {
		fmt.Fprintf(w, "%s CA: %s\n", k.Kind, k.Phase)
		fmt.Fprintf(w, "  signing:  %s (created %s)\n", k.Active.Fingerprint, fmtTime(k.Active.CreatedAt))
		if k.New != nil {
			fmt.Fprintf(w, "  new:      %s (created %s)\n", k.New.Fingerprint, fmtTime(k.New.CreatedAt))
			fmt.Fprintf(w, "  waiting:  %d certificates issued before the start still valid", k.Waiting)
			if !k.WaitingUntil.IsZero() {
				fmt.Fprintf(w, ", the last until %s", fmtTime(k.WaitingUntil))
			}
			fmt.Fprintln(w)
		}
		for _, o := range k.Old {
			fmt.Fprintf(w, "  old:      %s (created %s)\n", o.Fingerprint, fmtTime(o.CreatedAt))
		}
		if len(k.Old) > 0 {
			fmt.Fprintf(w, "  active since %s; %d certificates of the old key still valid", fmtTime(k.ActivatedAt), k.OldValid)
			if !k.OldExpire.IsZero() {
				fmt.Fprintf(w, ", the last until %s", fmtTime(k.OldExpire))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "  next:     %s\n", k.Next)
	}
	if a := st.Agents; a != nil {
		fmt.Fprintf(w, "agents: %d of %d connected to this gateway hold its current trust bundle", a.Current, a.Connected)
		if a.Current < a.Connected {
			fmt.Fprint(w, " (the others get it when they reconnect or renew)")
		}
		fmt.Fprintln(w)
	}
}
