package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
)

// status is what tunnel status shows.
type status struct {
	Gateway   string    `json:"gateway"`
	Cluster   string    `json:"cluster"`
	User      string    `json:"user"`
	Roles     []string  `json:"roles"`
	Logins    []string  `json:"logins"`
	NotAfter  time.Time `json:"not_after"`
	Remaining string    `json:"remaining"`
	Valid     bool      `json:"valid"`
}

func statusOf(p profile.Profile, now time.Time) status {
	s := status{Gateway: p.Gateway, Cluster: p.Cluster, User: p.User, Roles: p.Roles, Logins: p.Logins, NotAfter: p.NotAfter}
	if s.Roles == nil {
		s.Roles = []string{}
	}
	if s.Logins == nil {
		s.Logins = []string{}
	}
	if now.Before(p.NotAfter) {
		s.Valid = true
		s.Remaining = p.NotAfter.Sub(now).Round(time.Second).String()
	}
	return s
}

func newStatusCmd(env Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show who you are logged in as and for how long",
		Long:  "status shows the gateway, user, roles, SSH logins and the time left on your certificates. It exits non-zero when you are not logged in or your certificates have expired.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := profile.Open()
			if err != nil {
				return err
			}
			p, err := dir.Load()
			if err != nil {
				return err
			}
			cert, err := dir.TLSCertificate()
			if err != nil {
				return err
			}
			p.NotAfter = cert.Leaf.NotAfter
			now := env.Now()
			s := statusOf(p, now)
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), s); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "Gateway:  %s (cluster %s)\n", s.Gateway, s.Cluster)
				fmt.Fprintf(w, "User:     %s\n", s.User)
				fmt.Fprintf(w, "Roles:    %s\n", orNone(s.Roles))
				fmt.Fprintf(w, "Logins:   %s\n", orNone(s.Logins))
				if s.Valid {
					fmt.Fprintf(w, "Valid:    until %s (%s left)\n", fmtTime(s.NotAfter), profile.Human(s.NotAfter.Sub(now)))
				} else {
					fmt.Fprintf(w, "Valid:    expired at %s\n", fmtTime(s.NotAfter))
				}
			}
			return profile.CheckValid(cert.Leaf, now)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}
