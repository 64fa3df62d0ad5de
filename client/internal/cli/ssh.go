package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/client/sshclient"
	"github.com/tunnelhq/tunnel/pkg/api"
)

func sshAuthorizedKey(k *profile.Key) []byte { return ssh.MarshalAuthorizedKey(k.SSH) }

func newSSHCmd(env Env) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "ssh [--ttl D] LOGIN@NODE [--] [COMMAND...]",
		Short: "Open a time-limited bastion session to a node and run a shell or a command",
		Long: `ssh asks the gateway for a bastion session (LOGIN on NODE, for --ttl, at
most what your role allows), receives an SSH certificate for exactly that
session, and connects to the node's SSH endpoint through the gateway. The
node proves itself with a host certificate from the cluster (no
trust-on-first-use prompt). The session ends at its deadline, when an
administrator revokes it, or after the idle timeout; you are told which.

The remote command's exit status becomes tunnel's own. Everything after
LOGIN@NODE is the remote command, sent as is; a -- right after LOGIN@NODE
only ends tunnel's own flags and is not sent (as with OpenSSH's ssh).`,
		Example: `  tunnel ssh ubuntu@web-1
  tunnel ssh --ttl 10m deploy@web-1 systemctl restart app
  tunnel ssh ubuntu@web-1 -- ls -la /tmp`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			login, node, command, err := splitSSHArgs(args)
			if err != nil {
				return err
			}
			c, closeAll, err := openSSH(cmd.Context(), cmd, env, node, login, ttl)
			if err != nil {
				return err
			}
			// Closing the QUIC connection (not just exiting) tells the
			// gateway at once that the session is over.
			defer closeAll()
			return sshclient.Run(cmd.Context(), c, command, env.Stdin, env.Stdout, env.Stderr)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "session length (default 1h, at most what your role and your login allow)")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// splitSSHArgs reads LOGIN@NODE [--] [COMMAND...]. Flag parsing stops at
// LOGIN@NODE, so a -- after it reaches here: the first one, right after
// LOGIN@NODE, ends tunnel's flags and is dropped; any other is part of the
// command.
func splitSSHArgs(args []string) (login, node string, command []string, err error) {
	login, node, ok := strings.Cut(args[0], "@")
	if !ok || login == "" || node == "" {
		return "", "", nil, fmt.Errorf("%q is not LOGIN@NODE (for example ubuntu@web-1)", args[0])
	}
	command = args[1:]
	if len(command) > 0 && command[0] == "--" {
		command = command[1:]
	}
	return login, node, command, nil
}

// openSSH logs in first if needed (on a terminal), asks for a session and
// connects to the node.
func openSSH(ctx context.Context, cmd *cobra.Command, env Env, node, login string, ttl time.Duration) (*ssh.Client, func(), error) {
	if err := checkLength("--ttl", ttl, "the default, 1h"); err != nil {
		return nil, nil, err
	}
	s, err := loggedIn(env)
	if err != nil {
		if !term.IsTerminal(int(env.Stdin.Fd())) || errors.Is(err, profile.ErrNotLoggedIn) && !hasProfile() {
			return nil, nil, err
		}
		fmt.Fprintf(env.Stderr, "%v; logging in again.\n", err)
		if err := runLogin(cmd, env, loginFlags{}); err != nil {
			return nil, nil, err
		}
		if s, err = loggedIn(env); err != nil {
			return nil, nil, err
		}
	}
	defer s.Close()
	pub, err := os.ReadFile(s.dir.File(profile.PubKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read your public key: %w (run tunnel login)", err)
	}
	var grant api.SessionGrant
	req := api.CreateSessionRequest{Node: node, Login: login, TTL: api.Duration(ttl), SSHPublicKey: strings.TrimSpace(string(pub))}
	if err := s.client.Do(ctx, http.MethodPost, api.PathSessions, nil, req, &grant); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, nil, errors.New(ae.Message)
		}
		return nil, nil, err
	}
	signer, err := sessionSigner(s.dir, grant.SSHCertificate)
	if err != nil {
		return nil, nil, err
	}
	var hostCAs []ssh.PublicKey
	for _, line := range grant.SSHHostCAs {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, nil, fmt.Errorf("the gateway sent a malformed host CA: %w", err)
		}
		hostCAs = append(hostCAs, k)
	}
	cert, err := s.dir.TLSCertificate()
	if err != nil {
		return nil, nil, err
	}
	lc, err := dialGateways(s.profile, &cert)
	if err != nil {
		return nil, nil, err
	}
	c, err := sshclient.Dial(ctx, sshclient.Config{Opener: lc, Node: node, Login: login, SessionID: grant.Session.ID,
		Signer: signer, HostCAs: hostCAs})
	if err != nil {
		lc.Close()
		return nil, nil, err
	}
	return c, func() { c.Close(); lc.Close() }, nil
}

// sessionSigner pairs the login key with the session's certificate.
func sessionSigner(dir profile.Dir, certLine string) (ssh.Signer, error) {
	keyPEM, err := os.ReadFile(dir.File(profile.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("read your key: %w (run tunnel login)", err)
	}
	key, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("read your key: %w (run tunnel login)", err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(certLine))
	if err != nil {
		return nil, fmt.Errorf("the gateway sent a malformed session certificate: %w", err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("the gateway sent a key instead of a session certificate")
	}
	return ssh.NewCertSigner(cert, key)
}

func hasProfile() bool {
	dir, err := profile.Open()
	if err != nil {
		return false
	}
	_, err = dir.Load()
	return err == nil
}
