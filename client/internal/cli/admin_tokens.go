package cli

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
)

func newAdminTokensCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Create join tokens that let a new agent enrol",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTokensCreateCmd(env))
	return cmd
}

// agentDataDir is where the printed tunnel-agent command keeps the agent's
// identity.
const agentDataDir = "/var/lib/tunnel-agent"

// agentCommand is the command that enrols an agent with token.
func agentCommand(gateway, pin, token string) string {
	return strings.Join([]string{"tunnel-agent run", "--data-dir", agentDataDir, "--gateway", gateway,
		"--ca-pin", pin, "--token", token, "--config agent.yaml"}, " ")
}

// createdToken is what tokens create prints with --json.
type createdToken struct {
	api.Token
	// Command enrols the agent when run on its VM.
	Command string `json:"command"`
}

func newTokensCreateCmd(env Env) *cobra.Command {
	var agent string
	var ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create --agent NAME [--ttl D]",
		Short: "Create a single-use join token for an agent",
		Long: `create makes a join token for the agent called NAME (the VM's node name:
others reach its services as NAME/SERVICE). The token works once, until it
expires (--ttl, default 30m, at most 24h); the gateway keeps only its hash,
so it is shown only now.

It prints the tunnel-agent command to run on the VM. agent.yaml lists the
services the VM exposes and the local listeners it opens, for example:

  expose:
    - name: postgres
      address: 127.0.0.1:5432

Once enrolled, the agent renews its own certificates; a new token is needed
only if it stays offline until they expire.`,
		Example: "  tunnel admin tokens create --agent db-1\n  tunnel admin tokens create --agent web-1 --ttl 2h --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := loggedIn(env)
			if err != nil {
				return err
			}
			defer s.Close()
			var tok api.Token
			req := api.CreateTokenRequest{Agent: agent, TTL: api.Duration(ttl)}
			if err := s.call(cmd.Context(), http.MethodPost, api.PathTokens, nil, req, &tok); err != nil {
				return err
			}
			out := createdToken{Token: tok, Command: agentCommand(s.profile.Gateway, s.profile.CAPin, tok.Token)}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Join token for agent %s (single use, expires %s, in %s):\n\n  %s\n\n",
				tok.Agent, fmtTime(tok.ExpiresAt), profile.Human(tok.ExpiresAt.Sub(env.Now())), tok.Token)
			fmt.Fprintf(w, "On the VM, as root, with agent.yaml listing its services, run:\n\n  %s\n\n", out.Command)
			fmt.Fprintf(w, "Then allow the streams it needs, for example:\n\n  tunnel admin policy allow --from %s --to NODE/SERVICE\n", tok.Agent)
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "name of the agent (its node name) the token admits (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the token stays usable (default 30m, at most 24h)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (the token and the command)")
	_ = cmd.MarkFlagRequired("agent")
	return cmd
}
