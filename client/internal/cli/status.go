package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
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
	// Valid: the certificate is within its window on this machine's clock
	// and, when the gateway could be asked, the gateway accepts it.
	Valid   bool          `json:"valid"`
	Account accountStatus `json:"account"`
}

// accountStatus is the gateway's view of the login, asked with the
// user's own certificate (GET /v1/whoami).
type accountStatus struct {
	// State is "active" (the gateway accepts the certificate), "locked",
	// "refused" (revoked, user removed, unknown certificate: Message
	// says which), "unreachable" (the gateway could not be asked: the rest
	// is this machine's view only) or "not_checked" (the certificate has
	// expired on this machine's clock).
	State string `json:"state"`
	// Message is the gateway's refusal, or why it could not be asked.
	Message string `json:"message,omitempty"`
	// Roles and Admin are the user's roles now, from the gateway; they
	// may differ from those of the certificate until the next login.
	Roles []string `json:"roles,omitempty"`
	Admin bool     `json:"admin,omitempty"`
}

// Account states.
const (
	accountActive      = "active"
	accountLocked      = "locked"
	accountRefused     = "refused"
	accountUnreachable = "unreachable"
	accountNotChecked  = "not_checked"
)

func statusOf(p profile.Profile, now time.Time) status {
	s := status{Gateway: p.Gateway, Cluster: p.Cluster, User: p.User, Roles: p.Roles, Logins: p.Logins, NotAfter: p.NotAfter,
		Account: accountStatus{State: accountNotChecked}}
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

// accountOf reads the answer to GET /v1/whoami: the account as the
// gateway sees it, or why the gateway could not be asked.
func accountOf(w api.Whoami, err error) accountStatus {
	var ae *api.Error
	switch {
	case err == nil:
		roles := w.Roles
		if roles == nil {
			roles = []string{}
		}
		return accountStatus{State: accountActive, Roles: roles, Admin: w.Admin}
	case errors.As(err, &ae) && ae.Code == api.CodeForbidden:
		// The certificate is good but the account is locked.
		return accountStatus{State: accountLocked, Message: ae.Message}
	case errors.As(err, &ae) && ae.Code == api.CodeUnauthenticated:
		msg := ae.Message
		if !strings.Contains(msg, "tunnel login") && !strings.Contains(msg, "administrator:") {
			msg += ": run tunnel login"
		}
		return accountStatus{State: accountRefused, Message: msg}
	case errors.As(err, &ae):
		// The gateway answered, but not about the account (an internal
		// error, an older gateway): nothing is known.
		return accountStatus{State: accountUnreachable, Message: "the gateway could not check your account: " + ae.Message}
	}
	return accountStatus{State: accountUnreachable, Message: err.Error()}
}

// statusTimeout bounds the question to the gateway: status answers
// quickly, with the local view, when the gateway is slow or away.
const statusTimeout = 5 * time.Second

func newStatusCmd(env Env) *cobra.Command {
	var (
		asJSON  bool
		offline bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show who you are logged in as, for how long, and whether the gateway still accepts you",
		Long: `status shows the gateway, user, roles, SSH logins and the time left on your
certificates, then asks the gateway (with your certificate) whether it
still accepts you: your account may have been locked or removed, or your
certificate revoked, since you logged in. When the gateway cannot be
reached it says so, and what it shows is this machine's view only.

It exits non-zero when you are not logged in, your certificates have
expired, or the gateway refuses them.`,
		Args: cobra.NoArgs,
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
			localErr := profile.CheckValid(cert.Leaf, now)
			if localErr == nil && !offline {
				s.Account = askGateway(cmd.Context(), p, cert)
				if s.Account.State == accountLocked || s.Account.State == accountRefused {
					s.Valid = false
				}
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), s); err != nil {
					return err
				}
			} else {
				printStatus(cmd, s, now, offline)
			}
			if localErr != nil {
				return localErr
			}
			switch s.Account.State {
			case accountLocked, accountRefused:
				return fmt.Errorf("the gateway refuses your certificate: %s", s.Account.Message)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&offline, "offline", false, "do not ask the gateway: show this machine's view only")
	return cmd
}

// askGateway asks the gateway who the certificate belongs to now.
func askGateway(ctx context.Context, p profile.Profile, cert tls.Certificate) accountStatus {
	rp, err := p.Resolved(ctx)
	if err != nil {
		return accountStatus{State: accountUnreachable, Message: err.Error()}
	}
	c, err := apiclient.New(apiclient.Config{Gateway: rp.Gateway, Pin: p.CAPin, Cert: &cert, Timeout: statusTimeout})
	if err != nil {
		return accountStatus{State: accountUnreachable, Message: err.Error()}
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	var w api.Whoami
	err = c.Do(ctx, http.MethodGet, api.PathWhoami, nil, nil, &w)
	return accountOf(w, err)
}

func printStatus(cmd *cobra.Command, s status, now time.Time, offline bool) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Gateway:  %s (cluster %s)\n", s.Gateway, s.Cluster)
	fmt.Fprintf(w, "User:     %s\n", s.User)
	roles := orNone(s.Roles)
	if s.Account.State == accountActive && !sameSet(s.Account.Roles, s.Roles) {
		roles += fmt.Sprintf(" (the gateway now lists %s: run tunnel login to use them)", orNone(s.Account.Roles))
	}
	fmt.Fprintf(w, "Roles:    %s\n", roles)
	fmt.Fprintf(w, "Logins:   %s\n", orNone(s.Logins))
	switch {
	case now.After(s.NotAfter):
		fmt.Fprintf(w, "Valid:    expired at %s\n", fmtTime(s.NotAfter))
	case s.Valid:
		fmt.Fprintf(w, "Valid:    until %s (%s left)\n", fmtTime(s.NotAfter), profile.Human(s.NotAfter.Sub(now)))
	default:
		fmt.Fprintf(w, "Valid:    no: the gateway refuses it (it would have run until %s)\n", fmtTime(s.NotAfter))
	}
	switch s.Account.State {
	case accountActive:
		fmt.Fprintf(w, "Account:  active (the gateway accepts your certificate)\n")
	case accountLocked, accountRefused:
		fmt.Fprintf(w, "Account:  %s\n", s.Account.Message)
	case accountUnreachable:
		fmt.Fprintf(w, "Account:  not checked: %s; the lines above are this machine's view only\n", s.Account.Message)
	case accountNotChecked:
		if offline {
			fmt.Fprintf(w, "Account:  not checked (--offline); the lines above are this machine's view only\n")
		}
	}
}

// sameSet reports whether a and b hold the same names, in any order.
func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}
