package cli

import (
	"context"
	"errors"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Manage users, roles, agents, join tokens, policy and the audit log (needs an admin role)",
		Long: `admin commands act on the gateway you are logged in to, with your
certificate. Your roles must include one with the admin flag.

To add a VM: make a join token for it (tunnel admin tokens create --agent
NAME), run the printed tunnel-agent command on the VM, then allow the
streams it needs (tunnel admin policy allow --from AGENT --to NODE/SERVICE).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAdminUsersCmd(env), newAdminRolesCmd(env), newAdminTokensCmd(env),
		newAdminAgentsCmd(env), newAdminPolicyCmd(env), newAdminAuditCmd(env), newAdminSessionsCmd(env), newAdminGatewaysCmd(env),
		newAdminKRLCmd(env), newAdminNetworkCmd(env))
	cmd.AddCommand(newAdminCACmd(env))
	return cmd
}

// adminCall runs one API call as the logged-in user.
func adminCall(ctx context.Context, env Env, method, path string, query url.Values, in, out any) error {
	s, err := loggedIn(env)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.call(ctx, method, path, query, in, out)
}

// call runs one API call on the session; a refusal becomes its message.
func (s *session) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	err := s.client.Do(ctx, method, path, query, in, out)
	var ae *api.Error
	if errors.As(err, &ae) {
		return errors.New(ae.Message)
	}
	return err
}
