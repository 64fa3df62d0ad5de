package agent

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/testenv"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestSudoersDropIn: a session's drop-in is in place (mode 0440, the
// login's rule, accepted by visudo when installed) while the session has a
// connection, and gone with its last one; a login that sudoers would read
// as syntax is refused and writes nothing.
func TestSudoersDropIn(t *testing.T) {
	dir := t.TempDir()
	s := newSudoers(dir, slog.New(slog.DiscardHandler))
	path := filepath.Join(dir, "tunnel-sess-1")

	rel1, err := s.grant("sess-1", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("drop-in after grant: %v", err)
	}
	if fi.Mode().Perm() != 0o440 {
		t.Errorf("drop-in mode %v; want 0440", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "\ndeploy ALL=(ALL:ALL) NOPASSWD: ALL\n") {
		t.Errorf("drop-in content %q; want the rule for deploy", data)
	}
	if v, err := exec.LookPath("visudo"); err == nil {
		if out, err := exec.Command(v, "-cf", path).CombinedOutput(); err != nil {
			t.Errorf("visudo -cf refuses the drop-in: %v: %s", err, out)
		}
	}
	rel2, err := s.grant("sess-1", "deploy") // a second connection of the session
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.grant("sess-1", "root"); err == nil {
		t.Error("a second login for the same session: granted; want refused")
	}
	rel1()
	rel1() // twice: no effect
	if _, err := os.Stat(path); err != nil {
		t.Errorf("drop-in removed while the session still has a connection: %v", err)
	}
	rel2()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("drop-in after the last connection ended: %v; want it gone", err)
	}

	for _, login := range []string{"root ALL=(ALL) ALL", "a,b", "%admin", "", "x\ny"} {
		if _, err := s.grant("sess-2", login); err == nil {
			t.Errorf("grant for login %q succeeded; want refused", login)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused grants left files: %v", entries)
	}
	if got := sessionFile("a.b~c/d"); got != "tunnel-a_b_c_d" {
		t.Errorf("sessionFile = %q; want no dot, tilde or slash", got)
	}
}

// TestSudoersVisudoRefuses: with visudo installed, a drop-in it refuses is
// never put in place.
func TestSudoersVisudoRefuses(t *testing.T) {
	testenv.LookPath(t, "visudo")
	dir := t.TempDir()
	s := newSudoers(dir, slog.New(slog.DiscardHandler))
	if err := s.write(filepath.Join(dir, "tunnel-x"), "x", "deploy ALL"); err == nil {
		t.Fatal("visudo accepted a broken rule")
	} else if !strings.Contains(err.Error(), "refused by visudo") {
		t.Errorf("error %q; want it to say visudo refused", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused drop-in left files: %v", entries)
	}
}

// TestSudoersCleanStale: at start, the drop-ins a dead agent left are
// removed; files the agent did not write, and drop-ins held now, stay.
func TestSudoersCleanStale(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	write("tunnel-old-1", sudoersMark+"old-1: sudo for deploy\ndeploy ALL=(ALL:ALL) NOPASSWD: ALL\n")
	write(".tunnel-123.tmp", "half written")
	write("tunnel-foreign", "# an operator's own file\n")
	write("90-cloud-init-users", "ubuntu ALL=(ALL) NOPASSWD:ALL\n")
	s := newSudoers(dir, slog.New(slog.DiscardHandler))
	release, err := s.grant("live", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if n := s.cleanStale(); n != 2 {
		t.Errorf("cleanStale removed %d files; want 2", n)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := "90-cloud-init-users tunnel-foreign tunnel-live"
	if strings.Join(left, " ") != want {
		t.Errorf("left %v; want %s", left, want)
	}
}

// TestGrantSudoFollowsHeader: the connection's drop-in is put in place
// only when the gateway's header permits sudo for one login, once however
// often the session is looked up, and removed when the connection ends.
func TestGrantSudoFollowsHeader(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(sudoersEnv, "") // the file's sudoers_dir applies
	a := &Agent{log: slog.New(slog.DiscardHandler), cfg: Config{File: &FileConfig{SudoersDir: dir}}}
	count := func() int {
		entries, _ := os.ReadDir(dir)
		return len(entries)
	}
	for _, h := range []wire.Header{
		{Session: "s1", Login: "deploy", Permit: "port-forwarding"},
		{Session: "s2", Login: "deploy,root", Permit: "sudo"},
	} {
		hold := &sudoHold{}
		ctx := context.WithValue(context.Background(), sudoHoldKey{}, hold)
		if err := a.grantSudo(ctx, h); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 0 {
			t.Errorf("header %+v: %d drop-ins; want none", h, n)
		}
		hold.done()
	}
	hold := &sudoHold{}
	ctx := context.WithValue(context.Background(), sudoHoldKey{}, hold)
	h := wire.Header{Session: "s3", Login: "deploy", Permit: "agent-forwarding,sudo"}
	for range 2 { // looked up twice (two keys tried): one grant
		if err := a.grantSudo(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tunnel-s3")); err != nil {
		t.Fatalf("drop-in of a sudo session: %v", err)
	}
	hold.done()
	hold.done()
	if n := count(); n != 0 {
		t.Errorf("%d drop-ins after the connection ended; want none", n)
	}
}

// TestSudoersDirEnvOverridesFile: TUNNEL_SUDOERS_DIR wins over the file's
// sudoers_dir, which wins over the default.
func TestSudoersDirEnvOverridesFile(t *testing.T) {
	env, file := t.TempDir(), t.TempDir()
	t.Setenv(sudoersEnv, env)
	a := &Agent{log: slog.New(slog.DiscardHandler), cfg: Config{File: &FileConfig{SudoersDir: file}}}
	if got := a.sudo().dir; got != env {
		t.Errorf("with %s set: %s; want %s", sudoersEnv, got, env)
	}
	t.Setenv(sudoersEnv, "")
	b := &Agent{log: slog.New(slog.DiscardHandler)}
	if got := b.sudo().dir; got != DefaultSudoersDir {
		t.Errorf("no file, no environment: %s; want %s", got, DefaultSudoersDir)
	}
}
