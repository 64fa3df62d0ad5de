package cli

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitSSHArgs(t *testing.T) {
	tests := []struct {
		args        []string
		login, node string
		command     []string
		wantErr     string
	}{
		{args: []string{"ubuntu@web-1"}, login: "ubuntu", node: "web-1"},
		{args: []string{"ubuntu@web-1", "uptime"}, login: "ubuntu", node: "web-1", command: []string{"uptime"}},
		// The -- right after LOGIN@NODE ends tunnel's flags: not sent.
		{args: []string{"ubuntu@web-1", "--", "ls", "-la"}, login: "ubuntu", node: "web-1", command: []string{"ls", "-la"}},
		{args: []string{"ubuntu@web-1", "--"}, login: "ubuntu", node: "web-1"},
		// Only the first: a second -- belongs to the command.
		{args: []string{"ubuntu@web-1", "--", "grep", "--", "-x", "f"}, login: "ubuntu", node: "web-1", command: []string{"grep", "--", "-x", "f"}},
		// A -- inside the command is the command's.
		{args: []string{"ubuntu@web-1", "git", "log", "--", "README.md"}, login: "ubuntu", node: "web-1", command: []string{"git", "log", "--", "README.md"}},
		{args: []string{"ubuntu@web-1", "-v"}, login: "ubuntu", node: "web-1", command: []string{"-v"}},
		{args: []string{"web-1"}, wantErr: `"web-1" is not LOGIN@NODE`},
		{args: []string{"@web-1", "true"}, wantErr: `"@web-1" is not LOGIN@NODE`},
		{args: []string{"ubuntu@"}, wantErr: `"ubuntu@" is not LOGIN@NODE`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			login, node, command, err := splitSSHArgs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if login != tc.login || node != tc.node || !slices.Equal(command, tc.command) {
				t.Errorf("got %q, %q, %q; want %q, %q, %q", login, node, command, tc.login, tc.node, tc.command)
			}
		})
	}
}

// TestSSHDoubleDashReachesArgs checks that cobra leaves the -- after
// LOGIN@NODE in the arguments (so splitSSHArgs sees it) and consumes one
// before LOGIN@NODE.
func TestSSHDoubleDashReachesArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"ssh", "--ttl", "5m", "u@web-1", "--", "echo", "hi"}, []string{"u@web-1", "--", "echo", "hi"}},
		{[]string{"ssh", "--", "u@web-1", "echo", "hi"}, []string{"u@web-1", "echo", "hi"}},
		{[]string{"ssh", "u@web-1", "ls", "--ttl"}, []string{"u@web-1", "ls", "--ttl"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			root := newRoot(Env{})
			cmd, rest, err := root.Find(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Fatal(err)
			}
			if got := cmd.Flags().Args(); !slices.Equal(got, tc.want) {
				t.Errorf("arguments after flag parsing = %q; want %q", got, tc.want)
			}
		})
	}
}
