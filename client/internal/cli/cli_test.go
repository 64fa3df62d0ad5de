package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// run executes the CLI with a fresh TUNNEL_HOME and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv("TUNNEL_HOME", t.TempDir())
	var out bytes.Buffer
	env := Env{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }, Now: time.Now}
	err := Run(context.Background(), args, env)
	return out.String(), err
}

func TestArgumentsRefused(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ls", "db-1"}, `unknown command "db-1"`},
		{[]string{"admin", "agents", "ls", "x"}, `unknown command "x"`},
		{[]string{"admin", "agents", "lock"}, "takes NAME (got 0 arguments)"},
		{[]string{"admin", "agents", "unlock", "a", "b"}, "takes NAME (got 2 arguments)"},
		{[]string{"admin", "tokens", "create"}, `required flag(s) "agent" not set`},
		{[]string{"admin", "tokens", "create", "db-1", "--agent", "db-1"}, `unknown command "db-1"`},
		{[]string{"admin", "policy", "allow", "--from", "app-1"}, `required flag(s) "to" not set`},
		{[]string{"admin", "policy", "deny", "--to", "db-1/postgres"}, `required flag(s) "from" not set`},
		{[]string{"admin", "policy", "ls", "x"}, `unknown command "x"`},
		{[]string{"admin", "policy", "rm"}, "takes ID (got 0 arguments)"},
		{[]string{"admin", "policy", "rm", "first"}, `"first" is not a rule ID`},
		{[]string{"admin", "roles", "add", "dba", "extra", "--service", "db-1/postgres"}, "takes NAME (got 2 arguments)"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNotLoggedIn(t *testing.T) {
	for _, args := range [][]string{
		{"ls"},
		{"admin", "agents", "ls"},
		{"admin", "tokens", "create", "--agent", "db-1"},
		{"admin", "policy", "allow", "--from", "app-1", "--to", "db-1/postgres"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), "tunnel login") {
				t.Errorf("got error %v; want a hint to run tunnel login", err)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"admin", "--help"}, []string{"tokens", "agents", "policy", "tunnel admin tokens create --agent"}},
		{[]string{"admin", "tokens", "create", "--help"}, []string{"--agent", "--ttl", "--json", "works once", "agent.yaml"}},
		{[]string{"admin", "policy", "--help"}, []string{"allow", "deny", "default deny", "wins over every allow rule", "NODE/SERVICE"}},
		{[]string{"admin", "roles", "add", "--help"}, []string{"--node", "--service", "NODE/SERVICE"}},
		{[]string{"ls", "--help"}, []string{"--json", "tunnel proxy db"}},
		{[]string{"--help"}, []string{"ls "}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := run(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("help lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestAgentCommand(t *testing.T) {
	got := agentCommand("gw.example.com:8443", "sha256:ab12", "tjt_XYZ")
	want := "tunnel-agent run --data-dir /var/lib/tunnel-agent --gateway gw.example.com:8443 --ca-pin sha256:ab12 --token tjt_XYZ --config agent.yaml"
	if got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}
