package benchrun

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// sshPath is `ssh -N -L` through a throwaway sshd (integration/internal/
// sshdtest) with an Ed25519 key in an AuthorizedKeysFile. Its CPU cost is
// the ssh client plus every descendant of the sshd listener (the session
// processes that forward the data). sshd runs on the topology's server side
// (on netns it also listens on the server's LAN address), ssh on the client
// side.
type sshPath struct {
	e      *env
	topo   *topology
	sshBin string
	sshd   *sshdtest.Server
	client *service
}

func newSSHPath(e *env, topo *topology, sshBin string) *sshPath {
	return &sshPath{e: e, topo: topo, sshBin: sshBin}
}

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
	extra := []string{
		// Before sshdtest's "AuthorizedKeysFile none": the first value wins.
		"AuthorizedKeysFile " + authFile,
		"AllowTcpForwarding yes",
		"LogLevel ERROR",
	}
	server, client := p.topo.server, p.topo.client
	// On netns sshd listens on the server's LAN address too (ListenAddress
	// adds up), on a port of ours; sshdtest's own 127.0.0.1 one is local.
	lanPort := 0
	if p.topo.isNetns() {
		if lanPort, err = server.freePort(); err != nil {
			return nil, err
		}
		extra = append(extra, "ListenAddress "+server.addr(lanPort))
	}
	var user string
	err = server.do(func() error {
		return callTB(p.e, "sshd", func(t testing.TB) {
			sshdtest.WritePrivateKey(t, keyFile, priv)
			user = testenv.CurrentUser(t)
			p.sshd = sshdtest.Start(t, sshdtest.Config{ExtraConfig: extra})
		})
	})
	if err != nil {
		return nil, err
	}

	args := p.sshd.SSHArgs(keyFile, "")
	sshHost := "127.0.0.1"
	if lanPort != 0 {
		// Point the client at the LAN listener: its port, and the host key
		// under the LAN address.
		known := filepath.Join(dir, "known_hosts")
		line := fmt.Sprintf("[%s]:%d %s", server.ip, lanPort, ssh.MarshalAuthorizedKey(p.sshd.HostKey))
		if err := os.WriteFile(known, []byte(line), 0o644); err != nil {
			return nil, err
		}
		if args, err = retarget(args, lanPort, known); err != nil {
			return nil, err
		}
		sshHost = server.ip
	}
	args = append(args, "-N",
		"-o", "ExitOnForwardFailure=yes",
		"-o", "ServerAliveInterval=30",
		"-o", "LogLevel=ERROR",
	)
	addrs := map[string]string{}
	for _, t := range targets {
		port, err := client.freePort()
		if err != nil {
			return nil, err
		}
		addrs[t.Name] = loopback(port)
		args = append(args, "-L", addrs[t.Name]+":"+t.Addr)
	}
	args = append(args, user+"@"+sshHost)
	cmd := exec.Command(p.sshBin, args...)
	cmd.Dir = dir
	if p.client, err = p.e.startServiceOn(client, "ssh -L", cmd, filepath.Join(dir, "ssh.log")); err != nil {
		return nil, err
	}
	for _, t := range targets {
		a := addrs[t.Name]
		if err := waitFor(ctx, 20*time.Second, p.client, func() error { return acceptsTCP(ctx, client, a) }); err != nil {
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

// retarget rewrites sshdtest's SSHArgs for another port and known_hosts
// file (ssh takes the first -o value, so they are replaced, not appended).
func retarget(args []string, port int, knownHosts string) ([]string, error) {
	out := slices.Clone(args)
	var gotPort, gotKnown bool
	for i := 0; i+1 < len(out); i++ {
		switch {
		case out[i] == "-p":
			out[i+1] = strconv.Itoa(port)
			gotPort = true
		case out[i] == "-o" && strings.HasPrefix(out[i+1], "UserKnownHostsFile="):
			out[i+1] = "UserKnownHostsFile=" + knownHosts
			gotKnown = true
		}
	}
	if !gotPort || !gotKnown {
		return nil, fmt.Errorf("sshdtest.SSHArgs has no -p or -o UserKnownHostsFile= to point at the LAN listener: %q", args)
	}
	return out, nil
}
