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
		Short: "Manage users, roles and the audit log (needs an admin role)",
		Long: `admin commands act on the gateway you are logged in to, with your
certificate. Your roles must include one with the admin flag.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAdminUsersCmd(env), newAdminRolesCmd(env), newAdminAuditCmd(env))
	return cmd
}

// adminCall runs one API call as the logged-in user.
func adminCall(ctx context.Context, env Env, method, path string, query url.Values, in, out any) error {
	s, err := loggedIn(env)
	if err != nil {
		return err
	}
	defer s.Close()
	err = s.client.Do(ctx, method, path, query, in, out)
	var ae *api.Error
	if errors.As(err, &ae) {
		return errors.New(ae.Message)
	}
	return err
}
