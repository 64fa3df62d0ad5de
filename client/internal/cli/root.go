// Package cli is the `tunnel` command line. Each subcommand lives in its
// own file and has the same shape: flags into a struct, stray arguments
// rejected, one call into client/apiclient or client/profile, output as a
// table or, with --json, as JSON.
package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
	"github.com/tunnelhq/tunnel/pkg/version"
)

// Env is the outside world of the CLI, injected so tests can drive it.
type Env struct {
	Stdin          *os.File
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Now            func() time.Time
}

// Std is the process's own environment.
func Std() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Now: time.Now}
}

// Run executes the command line args (without the program name).
func Run(ctx context.Context, args []string, env Env) error {
	root := newRoot(env)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "tunnel",
		Short: "Log in to a tunnel gateway and use its short-lived certificates",
		Long: `tunnel logs you in to a tunnel gateway with your password and a TOTP code,
and keeps the short-lived certificates it issues under TUNNEL_HOME
(default ~/.tunnel). Admins manage users, roles, agents, policy and the
audit log with tunnel admin.

Start with:
  tunnel login --gateway gw.example.com:8443 --ca-pin sha256:HEX --user alice
  tunnel status
  tunnel ls`,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// tunnel --version prints what tunnel version prints.
	root.SetVersionTemplate("tunnel {{.Version}}\n")
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.AddCommand(newLoginCmd(env), newLogoutCmd(env), newStatusCmd(env), newLsCmd(env), newCACmd(env), newProxyCmd(env), newSSHCmd(env), newSCPCmd(env), newConfigCmd(env), newVersionCmd(env), newAdminCmd(env), newDoctorCmd(env), newRequestCmd(env))
	return root
}

// session is a loaded profile with an mTLS client, for commands that need
// a login.
type session struct {
	dir     profile.Dir
	profile profile.Profile
	client  *apiclient.Client
}

func (s *session) Close() { s.client.Close() }

// resolveTimeout bounds finding the gateways in DNS (--gateway srv:ZONE).
const resolveTimeout = 30 * time.Second

// loggedIn loads the profile and certificate and checks it is still valid,
// so an expired login fails here with a clear message rather than at the
// gateway.
func loggedIn(env Env) (*session, error) {
	dir, err := profile.Open()
	if err != nil {
		return nil, err
	}
	p, err := dir.Load()
	if err != nil {
		return nil, err
	}
	cert, err := dir.TLSCertificate()
	if err != nil {
		return nil, err
	}
	if err := profile.CheckValid(cert.Leaf, env.Now()); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	rp, err := p.Resolved(rctx)
	if err != nil {
		return nil, err
	}
	c, err := apiclient.New(apiclient.Config{Gateway: rp.Gateway, Pin: p.CAPin, Cert: &cert})
	if err != nil {
		return nil, err
	}
	return &session{dir: dir, profile: rp, client: c}, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// stderrLogger logs warnings (refused connections, an unreachable gateway)
// for long-running commands.
func stderrLogger(env Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
