package benchrun

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// sshPath is `ssh -N -L` through a throwaway sshd (integration/internal/
// sshdtest) with an Ed25519 key in an AuthorizedKeysFile. Its CPU cost is
// the ssh client plus every descendant of the sshd listener (the session
// processes that forward the data).
type sshPath struct {
	e      *env
	sshBin string
	sshd   *sshdtest.Server
	client *service
}

func newSSHPath(e *env, sshBin string) *sshPath { return &sshPath{e: e, sshBin: sshBin} }

func (p *sshPath) Name() string { return PathSSH }

func (p *sshPath) Setup(ctx context.Context, targets []Target) (map[string]string, error) {
	dir, err := p.e.mkdir("ssh")
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	authFile := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authFile, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, err
	}
	var user string
	err = callTB(p.e, "sshd", func(t testing.TB) {
		sshdtest.WritePrivateKey(t, keyFile, priv)
		user = testenv.CurrentUser(t)
		p.sshd = sshdtest.Start(t, sshdtest.Config{ExtraConfig: []string{
			// Before sshdtest's "AuthorizedKeysFile none": the first value wins.
			"AuthorizedKeysFile " + authFile,
			"AllowTcpForwarding yes",
			"LogLevel ERROR",
		}})
	})
	if err != nil {
		return nil, err
	}

	args := p.sshd.SSHArgs(keyFile, "")
	args = append(args, "-N",
		"-o", "ExitOnForwardFailure=yes",
		"-o", "ServerAliveInterval=30",
		"-o", "LogLevel=ERROR",
	)
	addrs := map[string]string{}
	for _, t := range targets {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addrs[t.Name] = loopback(port)
		args = append(args, "-L", addrs[t.Name]+":"+t.Addr)
	}
	args = append(args, user+"@127.0.0.1")
	cmd := exec.Command(p.sshBin, args...)
	cmd.Dir = dir
	if p.client, err = p.e.startService("ssh -L", cmd, filepath.Join(dir, "ssh.log")); err != nil {
		return nil, err
	}
	for _, t := range targets {
		a := addrs[t.Name]
		if err := waitFor(ctx, 20*time.Second, p.client, func() error { return acceptsTCP(ctx, a) }); err != nil {
			return nil, fmt.Errorf("ssh -L %s listener: %w\nsshd log:\n%s", t.Name, err, tailFile(p.sshd.LogFile, 30))
		}
	}
	return addrs, nil
}

func (p *sshPath) PIDs() []int {
	var pids []int
	if p.client != nil {
		pids = append(pids, p.client.pid())
	}
	if p.sshd != nil {
		// sshdtest does not export the listener's pid: find it by its config
		// file, then take its children (the per-connection sshd processes).
		if l := findProcess("sshd", "-f", p.sshd.ConfigFile); l != 0 {
			pids = append(pids, l)
			pids = append(pids, descendants(l)...)
		}
	}
	return pids
}

func (p *sshPath) Close() error {
	if p.client != nil {
		p.client.stop()
	}
	if p.sshd != nil {
		p.sshd.Stop()
	}
	return nil
}
