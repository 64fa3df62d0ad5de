package benchrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pquerna/otp/totp"
)

// tunnelPath is our product: app agent → gateway → db agent. The binaries
// (tunnel-gateway, tunnel-agent, tunnel) are built into a temp dir from the
// module (or taken from --tunnel-bin) and driven through their command line:
//
//	tunnel-gateway init --data-dir D --cluster bench --admin admin --admin-password-file F --json
//	    → {"ca_pin": "...", "admin": {"secret": "BASE32"}, ...}
//	tunnel-gateway run --data-dir D --api-addr 127.0.0.1:PORT
//	    → a line "... listening on HOST:PORT ..." on stdout or stderr
//	tunnel login --gateway 127.0.0.1:PORT --ca-pin PIN --user admin --password-file F --otp CODE   (TUNNEL_HOME=tmp)
//	tunnel admin tokens create --agent NAME --json   → {"token": "..."}
//	tunnel-agent run --data-dir D --gateway 127.0.0.1:PORT --ca-pin PIN --token T --config FILE.yaml
//	tunnel admin policy allow --from app-1 --to db-1/TARGET
//
// The gateway (and the admin commands) run on the topology's gateway host,
// the db agent on the server side, the app agent on the client side.
type tunnelPath struct {
	e          *env
	topo       *topology
	binDir     string // holds the three binaries
	name       string // PathTunnel, PathTunnelRelayed or PathTunnelTCP
	yamlExtra  string // appended to both agents' files
	extraGW    []string
	extraAgent []string
	agentEnv   []string // added to the agents' environment

	gateway, dbAgent, appAgent *service
}

// tunnelBinaries are the commands the tunnel path needs, by package.
var tunnelBinaries = map[string]string{
	"tunnel-gateway": "./gateway/cmd/tunnel-gateway",
	"tunnel-agent":   "./agent/cmd/tunnel-agent",
	"tunnel":         "./client/cmd/tunnel",
}

// buildTunnel builds the three binaries from the module at root into a new
// temp dir and returns it, or an error saying why the path is unusable.
func buildTunnel(ctx context.Context, e *env, root string) (string, error) {
	dir, err := e.mkdir("tunnel-bin")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "agent", "cmd", "tunnel-agent")); err != nil {
		return "", errors.New("./agent/cmd/tunnel-agent does not exist yet")
	}
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	for _, name := range []string{"tunnel-gateway", "tunnel-agent", "tunnel"} {
		args = append(args, tunnelBinaries[name])
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("`go build` of %s failed: %s\n(go %s: %v)",
			strings.Join(args[4:], " "), strings.ReplaceAll(msg, "\n", "; "), strings.Join(args, " "), err)
	}
	return dir, checkTunnelBin(dir)
}

func checkTunnelBin(dir string) error {
	for name := range tunnelBinaries {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s not found or not executable in %s", name, dir)
		}
	}
	return nil
}

func newTunnelPath(e *env, topo *topology, binDir, name string, extraGW, extraAgent []string) *tunnelPath {
	p := &tunnelPath{e: e, topo: topo, binDir: binDir, name: name, extraGW: extraGW, extraAgent: extraAgent}
	switch name {
	case PathTunnel:
		// The direct path on QUIC only (PathTunnelDirectTCP has its TCP
		// transport).
		p.agentEnv = []string{"TUNNEL_DIRECT_TCP=off"}
	case PathTunnelRelayed:
		p.yamlExtra = "direct: off\n"
	case PathTunnelTCP:
		p.extraAgent = append(append([]string(nil), extraAgent...), "--quic-over-tcp")
	}
	return p
}

func (p *tunnelPath) Name() string { return p.name }

func (p *tunnelPath) bin(name string) string { return filepath.Join(p.binDir, name) }

var listeningRE = regexp.MustCompile(`listening on ([0-9.]+:[0-9]+)`)

func (p *tunnelPath) Setup(ctx context.Context, targets []Target) (map[string]string, error) {
	dir, err := p.e.mkdir("tunnel")
	if err != nil {
		return nil, err
	}
	gwData := filepath.Join(dir, "gateway")
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	pwFile := filepath.Join(dir, "admin.pw")
	if err := os.WriteFile(pwFile, []byte("bench-admin-password-"+randHex(8)+"\n"), 0o600); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "TUNNEL_HOME="+home)
	gw, server, client := p.topo.gateway, p.topo.server, p.topo.client

	// run runs a short command on the gateway's host and returns its stdout
	// (stderr in the error).
	run := func(name string, args ...string) ([]byte, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, p.bin(name), args...)
		cmd.Env = env
		cmd.Dir = dir
		var stderr strings.Builder
		cmd.Stderr = &stderr
		var out []byte
		err := gw.do(func() (err error) {
			out, err = cmd.Output()
			return err
		})
		if err != nil {
			return out, fmt.Errorf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, stderr.String())
		}
		return out, nil
	}

	// 1. init
	out, err := run("tunnel-gateway", "init", "--data-dir", gwData, "--cluster", "bench",
		"--admin", "admin", "--admin-password-file", pwFile, "--json")
	if err != nil {
		return nil, err
	}
	var initRes struct {
		Pin   string `json:"ca_pin"`
		Admin struct {
			Secret string `json:"secret"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(out, &initRes); err != nil || initRes.Pin == "" || initRes.Admin.Secret == "" {
		return nil, fmt.Errorf("tunnel-gateway init --json: want {\"ca_pin\",\"admin\":{\"secret\"}}, got %q (%v)", out, err)
	}

	// 2. run the gateway
	port, err := gw.freePort()
	if err != nil {
		return nil, err
	}
	apiAddr := gw.addr(port) // 127.0.0.1:PORT on loopback
	gwLog := filepath.Join(dir, "gateway.log")
	gwArgs := []string{"run", "--data-dir", gwData, "--api-addr", apiAddr}
	if p.topo.isNetns() {
		// The API certificate covers the loopback addresses; the agents on
		// the other namespaces dial the LAN address.
		gwArgs = append(gwArgs, "--name", gw.ip)
	}
	gwArgs = append(gwArgs, p.extraGW...)
	cmd := exec.Command(p.bin("tunnel-gateway"), gwArgs...)
	cmd.Dir = dir
	cmd.Env = env
	if p.gateway, err = p.e.startServiceOn(gw, "tunnel-gateway", cmd, gwLog); err != nil {
		return nil, err
	}
	var gwAddr string
	if err := waitFor(ctx, 30*time.Second, p.gateway, func() error {
		b, _ := os.ReadFile(gwLog)
		if m := listeningRE.FindSubmatch(b); m != nil {
			gwAddr = string(m[1])
			return acceptsTCP(ctx, gw, gwAddr)
		}
		// No "listening on" line (yet): the --api-addr we chose will do
		// once it accepts.
		if err := acceptsTCP(ctx, gw, apiAddr); err != nil {
			return fmt.Errorf(`no "listening on HOST:PORT" line and %s does not accept: %w`, apiAddr, err)
		}
		gwAddr = apiAddr
		return nil
	}); err != nil {
		return nil, fmt.Errorf("tunnel-gateway run: %w\nlog:\n%s", err, tailFile(gwLog, 30))
	}
	if err := p.topo.checkAddr(gwAddr); err != nil {
		return nil, fmt.Errorf("tunnel-gateway: %w", err)
	}

	// 3. log in as the admin
	code, err := totp.GenerateCode(initRes.Admin.Secret, time.Now())
	if err != nil {
		return nil, fmt.Errorf("TOTP code: %w", err)
	}
	if _, err := run("tunnel", "login", "--gateway", gwAddr, "--ca-pin", initRes.Pin,
		"--user", "admin", "--password-file", pwFile, "--otp", code); err != nil {
		return nil, err
	}

	// 4. agent tokens
	token := func(agent string) (string, error) {
		out, err := run("tunnel", "admin", "tokens", "create", "--agent", agent, "--json")
		if err != nil {
			return "", err
		}
		var r struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(out, &r); err != nil || r.Token == "" {
			return "", fmt.Errorf("tunnel admin tokens create --agent %s --json: want {\"token\"}, got %q (%v)", agent, out, err)
		}
		return r.Token, nil
	}
	dbToken, err := token("db-1")
	if err != nil {
		return nil, err
	}
	appToken, err := token("app-1")
	if err != nil {
		return nil, err
	}

	// 5. agents
	var dbYAML, appYAML strings.Builder
	dbYAML.WriteString("expose:\n")
	appYAML.WriteString("listen:\n")
	addrs := map[string]string{}
	for _, t := range targets {
		lp, err := client.freePort()
		if err != nil {
			return nil, err
		}
		addrs[t.Name] = loopback(lp)
		fmt.Fprintf(&dbYAML, "  - name: %s\n    address: %q\n", t.Name, t.Addr)
		fmt.Fprintf(&appYAML, "  - name: %s\n    address: %q\n    target: %q\n", t.Name, addrs[t.Name], "db-1/"+t.Name)
	}
	startAgent := func(on *host, name, tok, yaml string) (*service, error) {
		adir := filepath.Join(dir, name)
		if err := os.MkdirAll(adir, 0o700); err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
			return nil, err
		}
		args := append([]string{"run", "--data-dir", adir, "--gateway", gwAddr, "--ca-pin", initRes.Pin,
			"--token", tok, "--config", conf}, p.extraAgent...)
		cmd := exec.Command(p.bin("tunnel-agent"), args...)
		cmd.Dir = dir
		cmd.Env = append(append([]string(nil), env...), p.agentEnv...)
		return p.e.startServiceOn(on, "tunnel-agent "+name, cmd, filepath.Join(dir, name+".log"))
	}
	dbYAML.WriteString(p.yamlExtra)
	appYAML.WriteString(p.yamlExtra)
	if p.dbAgent, err = startAgent(server, "db-1", dbToken, dbYAML.String()); err != nil {
		return nil, err
	}
	if p.appAgent, err = startAgent(client, "app-1", appToken, appYAML.String()); err != nil {
		return nil, err
	}

	// 6. policy: retried, since the gateway may only know db-1's services
	// once the agent has connected.
	for _, t := range targets {
		to := "db-1/" + t.Name
		var lastErr error
		if err := waitFor(ctx, 30*time.Second, nil, func() error {
			if err := p.alive(); err != nil {
				return err
			}
			_, lastErr = run("tunnel", "admin", "policy", "allow", "--from", "app-1", "--to", to)
			return lastErr
		}); err != nil {
			return nil, fmt.Errorf("policy allow app-1 → %s: %w%s", to, err, p.logs())
		}
	}

	// 7. the app agent's listeners
	for _, t := range targets {
		a := addrs[t.Name]
		if err := waitFor(ctx, 30*time.Second, p.appAgent, func() error {
			if err := p.alive(); err != nil {
				return err
			}
			return acceptsTCP(ctx, client, a)
		}); err != nil {
			return nil, fmt.Errorf("app agent listener %s (%s): %w%s", t.Name, a, err, p.logs())
		}
	}
	return addrs, nil
}

// alive returns an error if any tunnel process has exited.
func (p *tunnelPath) alive() error {
	for _, s := range []*service{p.gateway, p.dbAgent, p.appAgent} {
		if s != nil {
			if err := s.exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

// logs returns the tails of the processes' logs, for errors.
func (p *tunnelPath) logs() string {
	var b strings.Builder
	for _, s := range []*service{p.gateway, p.dbAgent, p.appAgent} {
		if s != nil {
			fmt.Fprintf(&b, "\n%s log (%s):\n%s", s.name, s.logFile, s.tail())
		}
	}
	return b.String()
}

func (p *tunnelPath) PIDs() []int {
	var pids []int
	for _, s := range []*service{p.gateway, p.dbAgent, p.appAgent} {
		if s != nil {
			pids = append(pids, s.pid())
		}
	}
	return pids
}

func (p *tunnelPath) Close() error {
	for _, s := range []*service{p.appAgent, p.dbAgent, p.gateway} {
		if s != nil {
			s.stop()
		}
	}
	return nil
}
