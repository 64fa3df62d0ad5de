package cli

import (
	"bufio"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
	"github.com/tunnelhq/tunnel/pkg/discovery"
	"github.com/tunnelhq/tunnel/pkg/secretfile"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

type loginFlags struct {
	gateway, user, pin, passwordFile, otp string
	dnsServer                             string
	ttl                                   time.Duration
	asJSON                                bool
}

func newLoginCmd(env Env) *cobra.Command {
	var f loginFlags
	cmd := &cobra.Command{
		Use:   "login [--gateway H:P] [--user NAME] [--ca-pin sha256:HEX] [--password-file F] [--otp CODE] [--ttl D]",
		Short: "Log in with your password and TOTP code and fetch short-lived certificates",
		Long: `login makes a new key pair on this machine, proves your password and TOTP
code to the gateway, and stores the X.509 and SSH certificates the gateway
signs for that key under TUNNEL_HOME. The private key never leaves this
machine.

The gateway is trusted through its CA pin (printed by tunnel-gateway init),
never on first use. With several gateways (--gateway a:8443,b:8443, sharing
one store) login tries them in order: one that cannot be reached, or that
answers it cannot reach its store, is skipped; a refusal is final. Every
later command uses the same list the same way. After the first login, --gateway, --user and --ca-pin
default to the previous ones; a --gateway list that shares a gateway with
the previous one keeps its --user and --ca-pin, another one needs them.

For scripts: --password-file F (or TUNNEL_PASSWORD) and --otp CODE (or
TUNNEL_OTP). Otherwise login prompts for them (the password without echo).`,
		Example: `  tunnel login --gateway gw.example.com:8443 --ca-pin sha256:3f1c... --user alice
  TUNNEL_PASSWORD=... tunnel login --otp 123456 --ttl 4h
  tunnel login --gateway gw-a.example.com:8443,gw-b.example.com:8443 --user alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLogin(cmd, env, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.gateway, "gateway", "", "gateway address HOST:PORT, or several separated by commas (tried in order), or srv:ZONE to find them in DNS")
	fl.StringVar(&f.dnsServer, "dns-server", "", "DNS server HOST:PORT that resolves --gateway srv:ZONE (default: this machine's resolvers; kept in your profile)")
	fl.StringVar(&f.user, "user", "", "your user name")
	fl.StringVar(&f.pin, "ca-pin", "", "the cluster CA pin, sha256:HEX")
	fl.StringVar(&f.passwordFile, "password-file", "", "read the password from this file ('-' for stdin)")
	fl.StringVar(&f.otp, "otp", "", "the current TOTP code from your authenticator")
	fl.DurationVar(&f.ttl, "ttl", 0, "certificate lifetime (default 1h, at most what your roles allow)")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	return cmd
}

func runLogin(cmd *cobra.Command, env Env, f loginFlags) error {
	dir, err := profile.Open()
	if err != nil {
		return err
	}
	prev, err := dir.Load()
	if err != nil && !errors.Is(err, profile.ErrNotLoggedIn) {
		return err
	}
	p := prev
	if f.gateway != "" {
		if _, isSRV, err := discovery.ParseGateway(f.gateway); err != nil {
			return fmt.Errorf("--gateway: %w", err)
		} else if !isSRV {
			gws, err := apiclient.SplitGateways(f.gateway)
			if err != nil {
				return fmt.Errorf("--gateway: %w", err)
			}
			f.gateway = strings.Join(gws, ",")
		}
	}
	if f.gateway != "" && f.gateway != prev.Gateway {
		// Another list of the same cluster (a gateway in common) keeps the
		// user and the pin; another cluster's forgets what belonged to the
		// previous one.
		p = profile.Profile{Gateway: f.gateway}
		if sharesGateway(f.gateway, prev.Gateway) {
			p.CAPin, p.User, p.DNSServer = prev.CAPin, prev.User, prev.DNSServer
		}
	}
	if f.pin != "" {
		p.CAPin = f.pin
	}
	if f.user != "" {
		p.User = f.user
	}
	if f.dnsServer != "" {
		p.DNSServer = f.dnsServer
	}
	if err := checkLength("--ttl", f.ttl, "the default, 1h"); err != nil {
		return err
	}
	switch {
	case p.Gateway == "":
		return errors.New("which gateway? give --gateway HOST:PORT")
	case p.CAPin == "" && prev.Gateway != "":
		return fmt.Errorf("%s shares no gateway with the one this profile logged in to (%s): give its cluster's --ca-pin sha256:HEX (tunnel-gateway init printed it)", p.Gateway, prev.Gateway)
	case p.CAPin == "":
		return errors.New("the gateway's CA pin is needed at the first login: give --ca-pin sha256:HEX (tunnel-gateway init printed it)")
	case p.User == "":
		return errors.New("which user? give --user NAME")
	}
	rp, err := p.Resolved(cmd.Context())
	if err != nil {
		return err
	}
	c, err := apiclient.New(apiclient.Config{Gateway: rp.Gateway, Pin: p.CAPin})
	if err != nil {
		return err
	}
	defer c.Close()

	password, err := secret(env, f.passwordFile, "TUNNEL_PASSWORD", fmt.Sprintf("Password for %s: ", p.User), true)
	if err != nil {
		return err
	}
	otp := f.otp
	if otp == "" {
		otp, err = secret(env, "", "TUNNEL_OTP", "TOTP code: ", false)
		if err != nil {
			return err
		}
	}
	// A typo is not sent: the gateway would count it as a failed login.
	if _, err := api.NormalizeCode(otp); err != nil {
		return fmt.Errorf("the TOTP code is the 6 digits your authenticator app shows for %s; got %q", p.User, otp)
	}
	key, err := profile.NewKey()
	if err != nil {
		return err
	}
	csr, err := key.CSR(p.User)
	if err != nil {
		return err
	}
	req := api.LoginRequest{User: p.User, Password: password, OTP: otp, CSR: csr,
		SSHPublicKey: strings.TrimSpace(string(sshAuthorizedKey(key))), TTL: api.Duration(f.ttl)}
	var resp api.LoginResponse
	if err := c.Do(cmd.Context(), http.MethodPost, api.PathLogin, nil, req, &resp); err != nil {
		return loginError(err)
	}
	if err := checkIssued(resp, key); err != nil {
		return err
	}
	// A CA rotation's new CA signs from its activate step: the pin follows
	// it (it authenticated this gateway, which gave the bundle), so that
	// the next rotation does not leave this profile pinned to a CA no
	// gateway chain carries. A pin of an operator's CA stays.
	trusted, _ := os.ReadFile(dir.File(profile.CAFile))
	if pin, moved := trust.FollowPin(p.CAPin, string(trusted), resp.CA.X509, resp.CA.Pin); moved {
		fmt.Fprintf(cmd.ErrOrStderr(), "The cluster's CA was rotated: this profile now pins %s (was %s).\n", pin, p.CAPin)
		p.CAPin = pin
	}
	if err := dir.SaveCredentials(profile.Credentials{
		Key: key, TLSCertPEM: resp.X509Certificate, SSHCert: resp.SSHCertificate,
		CAPEM: resp.CA.X509, SSHHostCAs: resp.CA.SSHHostCAs, Cluster: resp.CA.Cluster,
	}); err != nil {
		return err
	}
	p.User, p.Cluster, p.Roles, p.Logins, p.NotAfter = resp.User, resp.CA.Cluster, resp.Roles, resp.Logins, resp.NotAfter
	if err := dir.SaveProfile(p); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.asJSON {
		return printJSON(out, statusOf(p, env.Now()))
	}
	fmt.Fprintf(out, "Logged in to %s as %s until %s (%s).\n", resp.CA.Cluster, resp.User,
		fmtTime(resp.NotAfter), profile.Human(resp.NotAfter.Sub(env.Now())))
	if resp.Warning != "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", resp.Warning)
	}
	return nil
}

// sharesGateway reports whether two --gateway lists name a gateway in
// common.
func sharesGateway(a, b string) bool {
	bs := profile.Profile{Gateway: b}.Gateways()
	return slices.ContainsFunc(profile.Profile{Gateway: a}.Gateways(), func(g string) bool { return slices.Contains(bs, g) })
}

// loginError keeps the gateway's message, which is written for the user.
func loginError(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return errors.New("login refused: " + ae.Message)
	}
	return err
}

// checkIssued makes sure the gateway signed our key, not another.
func checkIssued(resp api.LoginResponse, key *profile.Key) error {
	blk, _ := pem.Decode([]byte(resp.X509Certificate))
	if blk == nil {
		return errors.New("the gateway sent no usable certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("the gateway sent a broken certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(key.Private.Public()) {
		return errors.New("the gateway's certificate is not for the key made by this login; refusing it")
	}
	return nil
}

// secret reads a secret from a file, an environment variable, or a prompt
// on the terminal (hidden if hide).
func secret(env Env, file, envVar, prompt string, hide bool) (string, error) {
	if file != "" {
		return secretfile.Read(file)
	}
	if v := env.Getenv(envVar); v != "" {
		return v, nil
	}
	fd := int(env.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", fmt.Errorf("no terminal to ask on: set %s%s", envVar, map[bool]string{true: " or give --password-file", false: " or give --otp"}[hide])
	}
	fmt.Fprint(env.Stderr, prompt)
	if hide {
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(env.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read code: %w", err)
	}
	return strings.TrimSpace(line), nil
}
