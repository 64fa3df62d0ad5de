package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/discovery"
)

// defaultJumpPort is the port of the gateway's SSH jump host
// (tunnel-gateway run --ssh-addr).
const defaultJumpPort = 2222

func newConfigCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print configuration that lets other tools use your tunnel login",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newConfigSSHCmd(env))
	return cmd
}

// sshConfig is what tunnel config ssh prints (as JSON with --json).
type sshConfig struct {
	Cluster         string `json:"cluster"`
	Gateway         string `json:"gateway"`
	HostPattern     string `json:"host_pattern"`
	ProxyJump       string `json:"proxy_jump"`
	JumpHost        string `json:"jump_host"`
	JumpMatch       string `json:"jump_match"`
	BarePattern     string `json:"bare_host_pattern"`
	CertificateFile string `json:"certificate_file"`
	IdentityFile    string `json:"identity_file"`
	KnownHostsFile  string `json:"known_hosts_file"`
	Config          string `json:"config"`
}

func newConfigSSHCmd(env Env) *cobra.Command {
	var (
		port   int
		suffix string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ssh [--ssh-port PORT] [--cluster-suffix CLUSTER] [--json]",
		Short: "Print an ssh_config block so plain OpenSSH reaches nodes through the gateway",
		Long: `config ssh prints an ssh_config block with which plain OpenSSH (ssh, scp,
sftp, rsync, git) reaches the cluster's nodes through the gateway's SSH
jump host, using the key and certificates of your tunnel login. Add it to
your OpenSSH configuration once:

  tunnel config ssh >> ~/.ssh/config

then, after tunnel login:

  ssh ubuntu@web-1.CLUSTER
  scp ./app.tar.gz deploy@web-1.CLUSTER:/tmp/
  ssh -J USER@GATEWAY:2222 ubuntu@web-1

where CLUSTER is your cluster's name (tunnel status shows it). The jump
host resolves NODE and NODE.CLUSTER itself, so no DNS entry is needed, and
it opens a bastion session for you that ends when your login certificate
expires (or sooner, as your role says), listed and revocable like any
other. Nodes and the jump host prove themselves with host certificates from
the cluster (TUNNEL_HOME/known_hosts), so there is no trust-on-first-use
prompt.

The block touches only NODE.CLUSTER, the gateway's host on the jump port
(ssh to the same host's own sshd on port 22 is left alone), and, for the
bare form ssh -J ... LOGIN@NODE, names without a dot, to which it adds your
tunnel certificate and the cluster's host CA beside what ssh already uses.

OpenSSH keeps the first value it finds for each option: put the block
before any "Host *" section that sets IdentityFile, ProxyJump or
UserKnownHostsFile. Run the command again when TUNNEL_HOME, the gateway or
its SSH port changes. It only reads your profile; no login is needed.`,
		Example: `  tunnel config ssh >> ~/.ssh/config
  tunnel config ssh --ssh-port 2022`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if port < 1 || port > 65535 {
				return fmt.Errorf("--ssh-port %d is not a TCP port", port)
			}
			dir, err := profile.Open()
			if err != nil {
				return err
			}
			p, err := dir.Load()
			if err != nil {
				return err
			}
			// --gateway srv:ZONE: ssh needs a host, not the zone.
			rctx, rcancel := context.WithTimeout(cmd.Context(), resolveTimeout)
			p, err = p.Resolved(rctx)
			rcancel()
			if err != nil {
				return err
			}
			cluster := p.Cluster
			switch {
			case suffix != "" && cluster != "" && !strings.EqualFold(suffix, cluster):
				return fmt.Errorf("--cluster-suffix %s is not your cluster %s: the jump host and the nodes' host certificates know nodes only as NODE and NODE.%s", suffix, cluster, cluster)
			case suffix != "":
				cluster = suffix
			case cluster == "":
				return errors.New("your profile does not name the cluster: run tunnel login again, or give --cluster-suffix CLUSTER")
			}
			home, err := filepath.Abs(dir.Path)
			if err != nil {
				return err
			}
			c, err := buildSSHConfig(p, cluster, home, port)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), c)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), c.Config)
			return err
		},
	}
	cmd.Flags().IntVar(&port, "ssh-port", defaultJumpPort, "port of the gateway's SSH jump host, on the gateway's host")
	cmd.Flags().StringVar(&suffix, "cluster-suffix", "", "the cluster name that ends node names (default: your cluster, from tunnel login)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the block and its parts as JSON")
	return cmd
}

// buildSSHConfig renders the ssh_config block for cluster, with the files
// of TUNNEL_HOME home.
func buildSSHConfig(p profile.Profile, cluster, home string, port int) (sshConfig, error) {
	// The jump host is the first gateway's (ssh takes one ProxyJump).
	if _, isSRV, _ := discovery.ParseGateway(p.Gateway); isSRV {
		return sshConfig{}, fmt.Errorf("the gateways of %s must be found in DNS first", p.Gateway)
	}
	host, _, err := net.SplitHostPort(p.FirstGateway())
	if err != nil {
		host = p.FirstGateway()
	}
	for _, w := range []struct{ what, v string }{{"gateway host", host}, {"user", p.User}, {"cluster", cluster}} {
		if err := checkSSHWord(w.v); err != nil {
			return sshConfig{}, fmt.Errorf("your profile's %s %q cannot go into ssh_config: %w", w.what, w.v, err)
		}
	}
	var files [3]string
	for i, name := range []string{profile.SSHCertFile, profile.KeyFile, profile.KnownHostFile} {
		if files[i], err = sshConfigPath(filepath.Join(home, name)); err != nil {
			return sshConfig{}, err
		}
	}
	jump := fmt.Sprintf("%s@%s", p.User, net.JoinHostPort(host, fmt.Sprint(port)))
	pattern := "*." + cluster
	if strings.HasSuffix(strings.ToLower(host), "."+strings.ToLower(cluster)) {
		// The jump host must not be reached through itself.
		pattern += " !" + host
	}
	jumpMatch := fmt.Sprintf(`host %s exec "test %%p = %d"`, host, port)
	var b strings.Builder
	fmt.Fprintf(&b, "# tunnel: cluster %s via %s; written by tunnel config ssh\n", cluster, p.Gateway)
	fmt.Fprintf(&b, "# after tunnel login: ssh LOGIN@NODE.%s, or ssh -J %s LOGIN@NODE\n", cluster, jump)
	fmt.Fprintf(&b, "Host %s\n", pattern)
	fmt.Fprintf(&b, "    ProxyJump %s\n", jump)
	writeIdentity(&b, files)
	fmt.Fprintf(&b, "# the jump host: port %d only, so ssh to %s's own sshd is left alone\n", port, host)
	fmt.Fprintf(&b, "Match %s\n", jumpMatch)
	writeIdentity(&b, files)
	b.WriteString("# bare node names (ssh -J ... LOGIN@NODE): your tunnel certificate and the\n")
	b.WriteString("# cluster's host CA are added to what ssh uses for names without a dot\n")
	fmt.Fprintf(&b, "Host %s\n", barePattern)
	fmt.Fprintf(&b, "    CertificateFile %s\n", files[0])
	fmt.Fprintf(&b, "    IdentityFile %s\n", files[1])
	fmt.Fprintf(&b, "    UserKnownHostsFile ~/.ssh/known_hosts ~/.ssh/known_hosts2 %s\n", files[2])
	b.WriteString("# end of the tunnel block\nHost *\n")
	return sshConfig{
		Cluster: cluster, Gateway: p.Gateway, HostPattern: pattern, ProxyJump: jump,
		JumpHost:        net.JoinHostPort(host, fmt.Sprint(port)),
		JumpMatch:       jumpMatch,
		BarePattern:     barePattern,
		CertificateFile: filepath.Join(home, profile.SSHCertFile),
		IdentityFile:    filepath.Join(home, profile.KeyFile),
		KnownHostsFile:  filepath.Join(home, profile.KnownHostFile),
		Config:          b.String(),
	}, nil
}

// barePattern matches host names without a dot: bare node names, as in
// ssh -J alice@gw:2222 ubuntu@web-1.
const barePattern = "!*.* *"

func writeIdentity(b *strings.Builder, files [3]string) {
	fmt.Fprintf(b, "    CertificateFile %s\n", files[0])
	fmt.Fprintf(b, "    IdentityFile %s\n", files[1])
	b.WriteString("    IdentitiesOnly yes\n")
	fmt.Fprintf(b, "    UserKnownHostsFile %s\n", files[2])
	b.WriteString("    StrictHostKeyChecking yes\n")
}

// checkSSHWord refuses what would change the meaning of an ssh_config
// line or Host pattern.
func checkSSHWord(s string) error {
	if s == "" {
		return errors.New("it is empty")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`"'\#,*?!%=`, r) {
			return fmt.Errorf("it holds %q", r)
		}
	}
	return nil
}

// sshConfigPath writes a file name as an ssh_config argument: % doubled
// (these options expand %-tokens), quoted when it holds a space or #.
func sshConfigPath(p string) (string, error) {
	if strings.ContainsAny(p, "\"\\\r\n") {
		return "", fmt.Errorf("TUNNEL_HOME %s cannot go into ssh_config (it holds a double quote, a backslash or a line break)", filepath.Dir(p))
	}
	p = strings.ReplaceAll(p, "%", "%%")
	if strings.ContainsAny(p, " \t#'") {
		p = `"` + p + `"`
	}
	return p, nil
}
