package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/client/profile"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// runIn executes the CLI with TUNNEL_HOME set to home, holding p when p
// is not nil.
func runIn(t *testing.T, home string, p *profile.Profile, args ...string) (string, error) {
	t.Helper()
	t.Setenv("TUNNEL_HOME", home)
	if p != nil {
		if err := (profile.Dir{Path: home}).SaveProfile(*p); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }, Now: time.Now}
	err := Run(context.Background(), args, env)
	if errOut.Len() > 0 {
		t.Errorf("stderr: %s", errOut.String())
	}
	return out.String(), err
}

var testProfile = profile.Profile{Gateway: "gw.example.com:8443", CAPin: "sha256:ab12", Cluster: "prod", User: "alice"}

const goldenConfigSSH = `# tunnel: cluster prod via gw.example.com:8443; written by tunnel config ssh
# after tunnel login: ssh LOGIN@NODE.prod, or ssh -J alice@gw.example.com:2222 LOGIN@NODE
Host *.prod
    ProxyJump alice@gw.example.com:2222
    CertificateFile TUNNEL_HOME/key-cert.pub
    IdentityFile TUNNEL_HOME/key
    IdentitiesOnly yes
    UserKnownHostsFile TUNNEL_HOME/known_hosts
    StrictHostKeyChecking yes
# the jump host: port 2222 only, so ssh to gw.example.com's own sshd is left alone
Match host gw.example.com exec "test %p = 2222"
    CertificateFile TUNNEL_HOME/key-cert.pub
    IdentityFile TUNNEL_HOME/key
    IdentitiesOnly yes
    UserKnownHostsFile TUNNEL_HOME/known_hosts
    StrictHostKeyChecking yes
# bare node names (ssh -J ... LOGIN@NODE): your tunnel certificate and the
# cluster's host CA are added to what ssh uses for names without a dot
Host !*.* *
    CertificateFile TUNNEL_HOME/key-cert.pub
    IdentityFile TUNNEL_HOME/key
    UserKnownHostsFile ~/.ssh/known_hosts ~/.ssh/known_hosts2 TUNNEL_HOME/known_hosts
# end of the tunnel block
Host *
`

func TestConfigSSHGolden(t *testing.T) {
	home := t.TempDir()
	out, err := runIn(t, home, &testProfile, "config", "ssh")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ReplaceAll(out, home, "TUNNEL_HOME"); got != goldenConfigSSH {
		t.Errorf("got:\n%s\nwant:\n%s", got, goldenConfigSSH)
	}
}

func TestConfigSSHVariants(t *testing.T) {
	tests := []struct {
		name    string
		p       profile.Profile
		args    []string
		want    []string
		wantErr string
	}{
		{name: "ssh port", p: testProfile, args: []string{"--ssh-port", "2022"},
			want: []string{"ProxyJump alice@gw.example.com:2022\n", "Match host gw.example.com exec \"test %p = 2022\"\n"}},
		{name: "gateway inside the cluster domain",
			p:    profile.Profile{Gateway: "gw.prod:8443", Cluster: "prod", User: "alice"},
			want: []string{"Host *.prod !gw.prod\n    ProxyJump alice@gw.prod:2222\n", "Match host gw.prod exec \"test %p = 2222\"\n"}},
		{name: "IPv6 gateway",
			p:    profile.Profile{Gateway: "[::1]:8443", Cluster: "prod", User: "alice"},
			want: []string{"ProxyJump alice@[::1]:2222\n", "Match host ::1 exec \"test %p = 2222\"\n"}},
		{name: "suffix for a profile without cluster",
			p:    profile.Profile{Gateway: "gw.example.com:8443", User: "alice"},
			args: []string{"--cluster-suffix", "prod"}, want: []string{"Host *.prod\n"}},
		{name: "suffix equal to the cluster", p: testProfile, args: []string{"--cluster-suffix", "prod"},
			want: []string{"Host *.prod\n"}},
		{name: "no cluster", p: profile.Profile{Gateway: "gw.example.com:8443", User: "alice"},
			wantErr: "your profile does not name the cluster: run tunnel login again, or give --cluster-suffix CLUSTER"},
		{name: "suffix not the cluster", p: testProfile, args: []string{"--cluster-suffix", "staging"},
			wantErr: "--cluster-suffix staging is not your cluster prod"},
		{name: "bad port", p: testProfile, args: []string{"--ssh-port", "0"}, wantErr: "--ssh-port 0 is not a TCP port"},
		{name: "hostile user", p: profile.Profile{Gateway: "gw.example.com:8443", Cluster: "prod", User: "a\nHost *"},
			wantErr: "cannot go into ssh_config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runIn(t, t.TempDir(), &tc.p, append([]string{"config", "ssh"}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestConfigSSHNotLoggedIn(t *testing.T) {
	_, err := runIn(t, t.TempDir(), nil, "config", "ssh")
	if !errors.Is(err, profile.ErrNotLoggedIn) {
		t.Errorf("got error %v; want %v", err, profile.ErrNotLoggedIn)
	}
}

func TestConfigSSHJSON(t *testing.T) {
	home := t.TempDir()
	out, err := runIn(t, home, &testProfile, "config", "ssh", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var c sshConfig
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	want := sshConfig{Cluster: "prod", Gateway: "gw.example.com:8443", HostPattern: "*.prod",
		ProxyJump: "alice@gw.example.com:2222", JumpHost: "gw.example.com:2222",
		JumpMatch: `host gw.example.com exec "test %p = 2222"`, BarePattern: "!*.* *",
		CertificateFile: filepath.Join(home, "key-cert.pub"), IdentityFile: filepath.Join(home, "key"),
		KnownHostsFile: filepath.Join(home, "known_hosts"),
		Config:         strings.ReplaceAll(goldenConfigSSH, "TUNNEL_HOME", home)}
	if c != want {
		t.Errorf("got %+v; want %+v", c, want)
	}
}

func TestConfigSSHHelp(t *testing.T) {
	out, err := run(t, "config", "ssh", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"tunnel config ssh >> ~/.ssh/config", "--ssh-port", "--cluster-suffix", "--json", "ssh ubuntu@web-1.CLUSTER", "ssh -J USER@GATEWAY:2222 ubuntu@web-1"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q:\n%s", w, out)
		}
	}
}

// TestConfigSSHOpenSSH has OpenSSH read the block (ssh -G resolves the
// configuration without connecting), from a TUNNEL_HOME whose name needs
// quoting and %-escaping.
func TestConfigSSHOpenSSH(t *testing.T) {
	testenv.LookPath(t, "ssh")
	home := filepath.Join(t.TempDir(), "my tunnel%h")
	out, err := runIn(t, home, &testProfile, "config", "ssh")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(cfg, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	resolveWith := func(cfg string, args ...string) map[string]string {
		t.Helper()
		b, err := exec.Command("ssh", append([]string{"-G", "-F", cfg}, args...)...).Output()
		if err != nil {
			t.Fatalf("ssh -G %v: %v\n%s", args, err, out)
		}
		opts := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, " ")
			if _, dup := opts[k]; !dup {
				opts[k] = v
			}
		}
		return opts
	}
	resolve := func(args ...string) map[string]string { t.Helper(); return resolveWith(cfg, args...) }
	// ssh -G prints IdentityFile and CertificateFile before expanding their
	// %-tokens (%% becomes %), UserKnownHostsFile after.
	raw := strings.ReplaceAll(home, "%", "%%")
	common := map[string]string{
		"certificatefile":       filepath.Join(raw, "key-cert.pub"),
		"identityfile":          filepath.Join(raw, "key"),
		"identitiesonly":        "yes",
		"userknownhostsfile":    filepath.Join(home, "known_hosts"),
		"stricthostkeychecking": "true",
	}
	node := resolve("ubuntu@web-1.prod")
	for k, v := range common {
		if strings.Trim(node[k], `"`) != v {
			t.Errorf("ssh web-1.prod: %s is %q; want %q", k, node[k], v)
		}
	}
	if node["proxyjump"] != "alice@gw.example.com:2222" || node["hostname"] != "web-1.prod" || node["user"] != "ubuntu" {
		t.Errorf("ssh web-1.prod: proxyjump %q hostname %q user %q", node["proxyjump"], node["hostname"], node["user"])
	}
	gw := resolve("-p", "2222", "alice@gw.example.com")
	for k, v := range common {
		if strings.Trim(gw[k], `"`) != v {
			t.Errorf("ssh gw.example.com: %s is %q; want %q", k, gw[k], v)
		}
	}
	if pj, ok := gw["proxyjump"]; ok && pj != "none" {
		t.Errorf("the jump host is reached through %q", pj)
	}
	if other := resolve("web-1.staging"); other["proxyjump"] != "" {
		t.Errorf("a host outside the cluster goes through %q", other["proxyjump"])
	}

	// The gateway's own sshd (port 22) is left as it was without the
	// block: compare with an empty configuration.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"admin@gw.example.com"}, {"-p", "22", "alice@gw.example.com"}, {"-p", "2022", "alice@gw.example.com"}} {
		got, want := resolve(args...), resolveWith(empty, args...)
		for _, k := range []string{"certificatefile", "identityfile", "identitiesonly", "userknownhostsfile", "stricthostkeychecking", "proxyjump"} {
			if got[k] != want[k] {
				t.Errorf("ssh %v: %s is %q; want %q as without the block", args, k, got[k], want[k])
			}
		}
	}

	// A bare node name (ssh -J alice@gw:2222 ubuntu@web-1) gets the tunnel
	// certificate and the cluster's known_hosts besides the defaults, and
	// no jump of its own.
	for _, args := range [][]string{{"ubuntu@web-1"}, {"-J", "alice@gw.example.com:2222", "ubuntu@web-1"}} {
		bare := resolve(args...)
		if strings.Trim(bare["certificatefile"], `"`) != common["certificatefile"] || strings.Trim(bare["identityfile"], `"`) != common["identityfile"] {
			t.Errorf("ssh %v: certificatefile %q identityfile %q; want the tunnel's first", args, bare["certificatefile"], bare["identityfile"])
		}
		if !strings.HasSuffix(strings.Trim(bare["userknownhostsfile"], `"`), filepath.Join(home, "known_hosts")) ||
			!strings.Contains(bare["userknownhostsfile"], "/.ssh/known_hosts ") {
			t.Errorf("ssh %v: userknownhostsfile %q; want the defaults and the tunnel's", args, bare["userknownhostsfile"])
		}
		if bare["identitiesonly"] == "yes" || bare["stricthostkeychecking"] == "true" {
			t.Errorf("ssh %v: identitiesonly %q stricthostkeychecking %q; want the defaults kept for names without a dot", args, bare["identitiesonly"], bare["stricthostkeychecking"])
		}
	}
	if pj := resolve("ubuntu@web-1")["proxyjump"]; pj != "" {
		t.Errorf("ssh ubuntu@web-1 without -J goes through %q; want no jump", pj)
	}
}

// A profile whose gateways are found in DNS (--gateway srv:ZONE) is
// resolved first: "srv" is not a host ssh can jump through.
func TestConfigSSHResolvesSRV(t *testing.T) {
	p := testProfile
	p.Gateway, p.DNSServer = "srv:prod.tunnel.test", "127.0.0.1:1"
	out, err := runIn(t, t.TempDir(), &p, "config", "ssh")
	if err == nil || !strings.Contains(err.Error(), "find the gateways of srv:prod.tunnel.test in DNS") || strings.Contains(out, "srv") {
		t.Errorf("config ssh with a gateway in DNS that cannot be asked: %q, %v; want the lookup's error and no block", out, err)
	}
	if _, err := buildSSHConfig(p, "prod", "/home/alice/.tunnel", 2222); err == nil {
		t.Error("buildSSHConfig wrote a block for an unresolved srv: gateway")
	}
}
