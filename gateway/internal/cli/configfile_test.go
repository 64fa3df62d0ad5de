package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// runFlags returns the flags of tunnel-gateway run after parsing args, as
// cobra parses them before RunE.
func runFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	cmd := newRunCmd()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return cmd.Flags()
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func flagValue(t *testing.T, fs *pflag.FlagSet, name string) string {
	t.Helper()
	f := fs.Lookup(name)
	if f == nil {
		t.Fatalf("no flag --%s", name)
	}
	return f.Value.String()
}

func TestConfigFileFlagsOverrideFile(t *testing.T) {
	fs := runFlags(t, "--api-addr", "127.0.0.1:9443", "--name", "cli.example.com")
	path := writeConfig(t, `# the gateway
data-dir: /var/lib/tunnel
api-addr: :8443
ssh-addr: ":2222"
name: [gw.example.com, 192.0.2.10]
idle-timeout: 30m
store-insecure: true
login-rate: 0.5
max-conns: 1000
`)
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"data-dir":         "/var/lib/tunnel",
		"api-addr":         "127.0.0.1:9443",    // the command line wins
		"name":             "[cli.example.com]", // also for a list
		"ssh-addr":         ":2222",
		"idle-timeout":     (30 * time.Minute).String(),
		"store-insecure":   "true",
		"login-rate":       "0.5",
		"max-conns":        "1000",
		"lockout-failures": "5", // not in the file: the default
	}
	for name, v := range want {
		if got := flagValue(t, fs, name); got != v {
			t.Errorf("--%s = %q, want %q", name, got, v)
		}
	}

	// Without --name on the command line, the file's list is taken whole.
	fs = runFlags(t)
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if got := flagValue(t, fs, "name"); got != "[gw.example.com,192.0.2.10]" {
		t.Errorf("--name = %s, want the file's two names", got)
	}
	// A single value is a list of one for a repeatable flag.
	fs = runFlags(t)
	if err := applyConfig(fs, []byte("name: one.example.com\n")); err != nil {
		t.Fatal(err)
	}
	if got := flagValue(t, fs, "name"); got != "[one.example.com]" {
		t.Errorf("--name = %s, want [one.example.com]", got)
	}
}

// Every flag of tunnel-gateway run is a key of the file.
func TestConfigFileEveryFlagHasAKey(t *testing.T) {
	var b strings.Builder
	n := 0
	runFlags(t).VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == configFlag {
			return
		}
		n++
		if _, ok := f.Value.(pflag.SliceValue); ok {
			b.WriteString(f.Name + ": [x.example.com]\n")
			return
		}
		b.WriteString(f.Name + ": \"" + f.DefValue + "\"\n")
	})
	if n < 20 {
		t.Fatalf("only %d flags found on tunnel-gateway run", n)
	}
	fs := runFlags(t)
	if err := applyConfig(fs, []byte(b.String())); err != nil {
		t.Fatalf("a file naming every flag with its default was refused: %v\n%s", err, b.String())
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && f.Name != configFlag && !f.Changed {
			t.Errorf("--%s was not set from the file", f.Name)
		}
	})
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"typo", "data-dir: /x\napi-adr: :8443\n", "unknown key api-adr (line 2): did you mean api-addr?"},
		{"underscore", "api_addr: :8443\n", "unknown key api_addr (line 1): did you mean api-addr?"},
		{"dashes", "--store: postgres://db/tunnel\n", "unknown key --store (line 1): did you mean store?"},
		{"far from any key", "colour: blue\n", "unknown key colour (line 1): the keys are the flags of tunnel-gateway run"},
		{"help is no key", "help: true\n", "unknown key help (line 1)"},
		{"config names no other file", "config: other.yaml\n", "config (line 1): a config file cannot name another one"},
		{"list for a single flag", "api-addr:\n  - :8443\n  - :9443\n", "api-addr (line 2): must be a single value, not a list"},
		{"mapping", "store:\n  url: postgres://x\n", "store (line 2): must be a single value, not a mapping"},
		{"null", "ssh-addr:\n", "ssh-addr (line 1): no value"},
		{"bad duration", "idle-timeout: 10 minutes\n", `idle-timeout (line 1): "10 minutes" is not a valid duration`},
		{"bad bool", "store-insecure: sometimes\n", `store-insecure (line 1): "sometimes" is not a valid bool`},
		{"bad int", "max-conns: many\n", `max-conns (line 1): "many" is not a valid int`},
		{"twice", "api-addr: :1\nstore-sync: full\napi-addr: :2\n", "api-addr (line 3): the key is given twice (first at line 1)"},
		{"two documents", "api-addr: :1\n---\napi-addr: :2\n", "more than one YAML document (line 2"},
		{"not a mapping", "- api-addr\n", "line 1: the configuration must be a mapping"},
		{"syntax", "api-addr: [\n", "not valid YAML"},
		{"alias", "a: &x :1\napi-addr: *x\n", "unknown key a (line 1)"},
		{"alias value", "api-addr: &x :1\nssh-addr: *x\n", "ssh-addr (line 2): YAML aliases"},
		{"list item not a value", "name:\n  - [a, b]\n", "name[0] (line 2): must be a single value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := applyConfig(runFlags(t), []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigFileNamesThePath(t *testing.T) {
	path := writeConfig(t, "adress: x\n")
	err := applyConfigFile(runFlags(t), path)
	if err == nil || !strings.Contains(err.Error(), "config "+path+": unknown key adress (line 1)") {
		t.Fatalf("error = %v; want the file's path, the key and the line", err)
	}
	err = applyConfigFile(runFlags(t), filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "read the config file") || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("error = %v; want it to say the file cannot be read", err)
	}
	// An empty file, or one of comments only, sets nothing.
	for _, text := range []string{"", "# nothing yet\n"} {
		fs := runFlags(t)
		if err := applyConfigFile(fs, writeConfig(t, text)); err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if got := flagValue(t, fs, "api-addr"); got != ":8443" {
			t.Fatalf("--api-addr = %q after an empty file, want the default", got)
		}
	}
	if err := applyConfigFile(runFlags(t), ""); err != nil {
		t.Fatalf("no --config: %v", err)
	}
}

// The environment sits between the command line and the file.
func TestConfigEnvPrecedence(t *testing.T) {
	dir := t.TempDir()
	storeFile := filepath.Join(dir, "store-url")
	url := "postgres://tunnel:s3cret@db.example.com/tunnel?sslmode=verify-full"
	if err := os.WriteFile(storeFile, []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TUNNEL_GATEWAY_STORE_FILE", storeFile)
	t.Setenv("TUNNEL_GATEWAY_KEK_FILE", "/run/secrets/kek")
	t.Setenv("TUNNEL_GATEWAY_TLS_CERT_FILE", "")
	file := writeConfig(t, "store: postgres://file@db/tunnel\nkek-file: /etc/tunnel/kek\ntls-cert: /etc/tunnel/api.pem\ntls-key: /etc/tunnel/api.key\n")

	fs := runFlags(t, "--kek-file", "/cli/kek")
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, file); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"store":    url,                   // env (a file's contents) over the config file
		"kek-file": "/cli/kek",            // the command line over the env
		"tls-cert": "/etc/tunnel/api.pem", // an empty variable counts as unset
		"tls-key":  "/etc/tunnel/api.key",
	} {
		if got := flagValue(t, fs, name); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}

	fs = runFlags(t)
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if got := flagValue(t, fs, "kek-file"); got != "/run/secrets/kek" {
		t.Errorf("--kek-file = %q, want TUNNEL_GATEWAY_KEK_FILE's path", got)
	}
}

func TestConfigEnvErrors(t *testing.T) {
	t.Setenv("TUNNEL_GATEWAY_STORE_FILE", filepath.Join(t.TempDir(), "absent"))
	err := applyEnv(runFlags(t))
	if err == nil || !strings.Contains(err.Error(), "TUNNEL_GATEWAY_STORE_FILE (the file holding the PostgreSQL URL") {
		t.Fatalf("error = %v; want it to name the variable", err)
	}
	// The command line's --store wins: the variable's file is not read.
	if err := applyEnv(runFlags(t, "--store", "postgres://x@127.0.0.1/t")); err != nil {
		t.Fatalf("with --store given: %v", err)
	}
	// A flag set the variable does not know is left alone (init has no --tls-cert).
	fs := pflag.NewFlagSet("init", pflag.ContinueOnError)
	fs.String("kek-file", "", "")
	t.Setenv("TUNNEL_GATEWAY_STORE_FILE", "")
	t.Setenv("TUNNEL_GATEWAY_TLS_CERT_FILE", "/x.pem")
	t.Setenv("TUNNEL_GATEWAY_KEK_FILE", "/k")
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if got := flagValue(t, fs, "kek-file"); got != "/k" {
		t.Errorf("--kek-file = %q, want /k", got)
	}
}

// The example files the repository ships are valid.
func TestConfigFileExamples(t *testing.T) {
	for _, p := range []string{"../../../deploy/systemd/gateway.yaml", "../../../deploy/compose/gateway.yaml"} {
		fs := runFlags(t)
		if err := applyConfigFile(fs, p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if !fs.Lookup("api-addr").Changed {
			t.Errorf("%s: api-addr not set", p)
		}
	}
}
