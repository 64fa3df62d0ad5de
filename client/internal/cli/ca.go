package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
)

func newCACmd(env Env) *cobra.Command {
	var gateway, pin, kind string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ca [--type x509|ssh-user|ssh-host] [--gateway H:P --ca-pin sha256:HEX]",
		Short: "Print the cluster's CA certificates and keys (public)",
		Long: `ca fetches the cluster's public trust anchors from the gateway, checked
against the CA pin. Use it to configure servers that trust the cluster:

  tunnel ca --type ssh-user > /etc/ssh/tunnel_user_ca.pub   # sshd TrustedUserCAKeys
  tunnel ca --type ssh-host                                  # for @cert-authority lines
  tunnel ca --type x509 > tunnel-ca.pem                      # openssl verify -CAfile

Without --gateway and --ca-pin it uses those of your last login; no login is
needed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := publicClient(gateway, pin)
			if err != nil {
				return err
			}
			defer c.Close()
			var ca api.CA
			if err := c.Do(cmd.Context(), http.MethodGet, api.PathCA, nil, nil, &ca); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, ca)
			}
			switch kind {
			case "x509":
				fmt.Fprint(out, ca.X509)
			case "ssh-user":
				fmt.Fprintln(out, strings.Join(ca.SSHUserCAs, "\n"))
			case "ssh-host":
				fmt.Fprintln(out, strings.Join(ca.SSHHostCAs, "\n"))
			default:
				return fmt.Errorf("--type %q: use x509, ssh-user or ssh-host", kind)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&gateway, "gateway", "", "gateway address HOST:PORT (default: from your last login)")
	cmd.Flags().StringVar(&pin, "ca-pin", "", "the cluster CA pin (default: from your last login)")
	cmd.Flags().StringVar(&kind, "type", "x509", "which CA: x509, ssh-user or ssh-host")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print all of them as JSON")
	return cmd
}

// publicClient returns a client of the gateway's public endpoints (tunnel
// ca, tunnel admin krl): no login is needed, the answer is checked against
// the CA pin. An empty gateway or pin is taken from the last login.
func publicClient(gateway, pin string) (*apiclient.Client, error) {
	if gateway == "" || pin == "" {
		dir, err := profile.Open()
		if err != nil {
			return nil, err
		}
		p, err := dir.Load()
		if err != nil && !errors.Is(err, profile.ErrNotLoggedIn) {
			return nil, err
		}
		if gateway == "" {
			gateway = p.Gateway
		}
		if pin == "" {
			pin = p.CAPin
		}
	}
	if gateway == "" || pin == "" {
		return nil, errors.New("which gateway? give --gateway HOST:PORT and --ca-pin sha256:HEX, or log in first")
	}
	return apiclient.New(apiclient.Config{Gateway: gateway, Pin: pin})
}
