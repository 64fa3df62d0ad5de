package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/secretfile"
	"github.com/tunnelhq/tunnel/pkg/termqr"
)

func newAdminUsersCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Add, list, remove, lock and unlock users, grant and revoke their roles, and reset their MFA",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newUsersAddCmd(env), newUsersLsCmd(env), newUsersRmCmd(env),
		newUsersRolesCmd(env, true), newUsersRolesCmd(env, false),
		newUsersActionCmd(env, "lock", "Lock a user: new logins are refused", "lock"),
		newUsersActionCmd(env, "unlock", "Unlock a user (also lifts a lockout after failed logins)", "unlock"),
		newUsersResetMFACmd(env))
	return cmd
}

func newUsersAddCmd(env Env) *cobra.Command {
	var roles []string
	var pwFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add NAME [--role R]... [--password-file F]",
		Short: "Add a user and print their TOTP enrolment",
		Long: `add creates a user with a password and a new TOTP secret, and prints the
enrolment (otpauth:// URI and secret; a QR code on a terminal) to hand to the
user once. The password comes from --password-file, TUNNEL_USER_PASSWORD, or
a prompt; it must be at least 12 characters long.`,
		Example: "  tunnel admin users add bob --role dev --password-file bob.pw",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := newPassword(env, pwFile)
			if err != nil {
				return err
			}
			var enr api.Enrollment
			req := api.CreateUserRequest{Name: args[0], Roles: roles, Password: pw}
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathUsers, nil, req, &enr); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), enr)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Added user %s.\n", enr.User)
			termqr.PrintEnrollment(cmd.OutOrStdout(), enr.User, enr.URI, enr.Secret)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&roles, "role", nil, "role to grant (repeatable)")
	cmd.Flags().StringVar(&pwFile, "password-file", "", "file holding the new user's password ('-' for stdin)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the enrolment as JSON")
	return cmd
}

func newPassword(env Env, file string) (string, error) {
	if file != "" {
		return secretfile.Read(file)
	}
	if v := env.Getenv("TUNNEL_USER_PASSWORD"); v != "" {
		return v, nil
	}
	fd := int(env.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("no password: give --password-file F or set TUNNEL_USER_PASSWORD")
	}
	fmt.Fprint(env.Stderr, "Password for the new user: ")
	a, err := term.ReadPassword(fd)
	fmt.Fprintln(env.Stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(env.Stderr, "Again: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(env.Stderr)
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ")
	}
	return string(a), nil
}

func newUsersLsCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var users []api.User
			if err := adminCall(cmd.Context(), env, http.MethodGet, api.PathUsers, nil, nil, &users); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), users)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLES\tSTATE\tCREATED")
			for _, u := range users {
				state := "active"
				if u.Locked {
					state = "locked"
				} else if u.LockedOutUntil != nil {
					state = "locked out until " + fmtTime(*u.LockedOutUntil)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, orNone(u.Roles), state, fmtTime(u.CreatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newUsersRmCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminCall(cmd.Context(), env, http.MethodDelete, api.PathUsers+"/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed user %s.\n", args[0])
			return nil
		},
	}
}

func newUsersActionCmd(env Env, verb, short, path string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathUsers+"/"+url.PathEscape(args[0])+"/"+path, nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "User %s: %sed.\n", args[0], strings.TrimSuffix(verb, "e"))
			return nil
		},
	}
}

func newUsersResetMFACmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reset-mfa NAME",
		Short: "Give a user a new TOTP secret (the old one stops working)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var enr api.Enrollment
			if err := adminCall(cmd.Context(), env, http.MethodPost, api.PathUsers+"/"+url.PathEscape(args[0])+"/reset-mfa", nil, nil, &enr); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), enr)
			}
			termqr.PrintEnrollment(cmd.OutOrStdout(), enr.User, enr.URI, enr.Secret)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the enrolment as JSON")
	return cmd
}

// exactArgs rejects stray or missing arguments with a hint.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %s (got %d arguments); see %s --help", cmd.CommandPath(), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// newUsersRolesCmd is `users grant` (grant) or `users revoke`.
func newUsersRolesCmd(env Env, grant bool) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "grant NAME ROLE...",
		Short: "Grant a user roles (they apply at once)",
		Long: `grant gives the user NAME the roles named, keeping the roles they hold.
They apply at once: every new session and stream is decided with the roles
as they are now. The SSH logins their login certificate carries (for ssh -J
and plain OpenSSH) change at their next login. Granting a role the user
holds changes nothing. The change is audited (user.roles_changed).`,
		Example: "  tunnel admin users grant bob dev ops",
		Args:    rolesArgs,
	}
	if !grant {
		cmd.Use = "revoke NAME ROLE..."
		cmd.Short = "Take roles away from a user (at once: what they no longer allow is closed)"
		cmd.Long = `revoke takes the roles named away from the user NAME, keeping their other
roles. It applies at once: new sessions and streams are decided without
them, and the user's live sessions and streams they no longer allow are
closed, with the reason (tunnel admin users lock NAME cuts all their
access). Revoking a role the user does not hold changes nothing. You
cannot revoke your own last role that grants the admin API. The change is
audited (user.roles_changed).`
		cmd.Example = "  tunnel admin users revoke bob ops"
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		in := api.UserRolesChange{Grant: args[1:]}
		if !grant {
			in = api.UserRolesChange{Revoke: args[1:]}
		}
		var u api.User
		if err := adminCall(cmd.Context(), env, http.MethodPost, api.UserRolesPath(args[0]), nil, in, &u); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), u)
		}
		held := "no role"
		if len(u.Roles) > 0 {
			held = "the roles " + strings.Join(u.Roles, ", ")
		}
		fmt.Fprintf(cmd.OutOrStdout(), "User %s now holds %s.\n", u.Name, held)
		return nil
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the user as JSON")
	return cmd
}

// rolesArgs wants a user name and at least one role.
func rolesArgs(cmd *cobra.Command, args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("%s takes NAME ROLE... (got %d arguments); see %s --help", cmd.CommandPath(), len(args), cmd.CommandPath())
	}
	return nil
}
