package integration

// The tunnel CLI as a new user meets it (issue 7, part 5): the binaries
// make build makes, tunnel version, tunnel ssh LOGIN@NODE -- CMD, tunnel
// scp with several sources and its progress line, tunnel status once the
// account is gone, and tunnel proxy saying why the gateway cut it. Also the
// fuzz script make test runs.

import (
	"bytes"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// clientRepoRoot is the repository's root (the tests run in integration/).
func clientRepoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// clientGit runs git in the repository; "" when git cannot answer (no
// git, a source tarball).
func clientGit(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = clientRepoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

type clientVersion struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

// clientVersionOf runs `tunnel version --json` and `tunnel --version`
// with the binary tunnel and checks they agree.
func clientVersionOf(t *testing.T, tunnel string) clientVersion {
	t.Helper()
	out, err := exec.Command(tunnel, "version", "--json").Output()
	if err != nil {
		t.Fatalf("tunnel version --json: %v", err)
	}
	var v clientVersion
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("tunnel version --json printed %q: %v", out, err)
	}
	if v.Version == "" || v.GoVersion != runtime.Version() || v.OS != runtime.GOOS || v.Arch != runtime.GOARCH {
		t.Errorf("tunnel version --json = %+v; want a version, %s, %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	text, err := exec.Command(tunnel, "version").Output()
	if err != nil {
		t.Fatalf("tunnel version: %v", err)
	}
	flag, err := exec.Command(tunnel, "--version").Output()
	if err != nil {
		t.Fatalf("tunnel --version: %v", err)
	}
	line := fmt.Sprintf("tunnel %s (commit ", v.Version)
	if !strings.HasPrefix(string(text), line) || !strings.Contains(string(text), fmt.Sprintf(", %s, %s/%s)\n", v.GoVersion, v.OS, v.Arch)) {
		t.Errorf("tunnel version printed %q; want %q...", text, line)
	}
	if !bytes.Equal(flag, text) {
		t.Errorf("tunnel --version printed %q; want what tunnel version prints, %q", flag, text)
	}
	return v
}

// TestClientVersion: tunnel version (text and --json) and tunnel
// --version name the build: the commit comes from the Go toolchain's stamp
// when the Makefile did not set it (TestMakeBuildBuildsEveryBinary covers
// the Makefile's).
func TestClientVersion(t *testing.T) {
	v := clientVersionOf(t, bin("tunnel"))
	if v.Version != "dev" {
		t.Errorf("a plain go build reports version %q; want dev", v.Version)
	}
	// The toolchain stamps the revision unless told not to
	// (-buildvcs=false): what it recorded, or "unknown".
	bi, err := buildinfo.ReadFile(bin("tunnel"))
	if err != nil {
		t.Fatal(err)
	}
	want := "unknown"
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			want = s.Value
		}
	}
	if v.Commit != want {
		t.Errorf("tunnel version reports commit %q; want %q (the binary's build information)", v.Commit, want)
	}
}

// TestMakeBuildBuildsEveryBinary runs make build (into a temporary BIN,
// so the repository's bin/ is left alone) and checks it makes the three
// binaries the README and tunnel admin tokens create name, with the
// version and commit the Makefile stamps.
func TestMakeBuildBuildsEveryBinary(t *testing.T) {
	makeBin := testenv.LookPath(t, "make")
	out := t.TempDir()
	cmd := exec.Command(makeBin, "-C", clientRepoRoot(t), "build", "BIN="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, b)
	}
	for _, name := range []string{"tunnel", "tunnel-gateway", "tunnel-agent"} {
		help, err := exec.Command(filepath.Join(out, name), "--help").CombinedOutput()
		if err != nil {
			t.Errorf("%s --help after make build: %v\n%s", name, err, help)
		}
	}
	v := clientVersionOf(t, filepath.Join(out, "tunnel"))
	if head := clientGit(t, "rev-parse", "HEAD"); head != "" {
		if desc := clientGit(t, "describe", "--tags", "--always", "--dirty"); v.Version != desc || v.Commit != head {
			t.Errorf("make build's tunnel reports %s at %s; want %s at %s", v.Version, v.Commit, desc, head)
		}
	}
}

// TestClientAgainstANode drives tunnel ssh, scp and proxy against a real
// gateway and node, the way the new user did.
func TestClientAgainstANode(t *testing.T) {
	e := newSSHEnv(t)

	t.Run("ssh -- ends tunnel's flags", func(t *testing.T) {
		code, out, se := e.bob.exitCode("ssh", e.login+"@web-1", "--", "echo", "after-double-dash")
		if code != 0 || out != "after-double-dash\n" {
			t.Errorf("tunnel ssh LOGIN@web-1 -- echo after-double-dash: exit %d, stdout %q, stderr %q; want the command run without --", code, out, se)
		}
		// Only the first -- is tunnel's: the command keeps its own.
		code, out, se = e.bob.exitCode("ssh", e.login+"@web-1", "--", "echo", "--", "kept")
		if code != 0 || out != "-- kept\n" {
			t.Errorf("tunnel ssh LOGIN@web-1 -- echo -- kept: exit %d, stdout %q, stderr %q; want \"-- kept\"", code, out, se)
		}
		if code, _, se := e.bob.exitCode("ssh", "--ttl", "5m", e.login+"@web-1", "--", "sh", "-c", "'exit 3'"); code != 3 {
			t.Errorf("tunnel ssh --ttl 5m LOGIN@web-1 -- sh -c 'exit 3': exit %d (stderr %q); want 3", code, se)
		}
	})

	t.Run("scp several sources", func(t *testing.T) {
		dir := t.TempDir() // web-1 is this machine
		var files []string
		for i, size := range []int{0, 1000, 300 << 10} {
			p := filepath.Join(dir, fmt.Sprintf("f%d.bin", i))
			data := make([]byte, size)
			rand.Read(data)
			if err := os.WriteFile(p, data, 0o640); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
		up := filepath.Join(dir, "up")
		down := filepath.Join(dir, "down")
		os.Mkdir(up, 0o755)
		os.Mkdir(down, 0o755)
		args := append(append([]string{"scp"}, files...), e.login+"@web-1:"+up+"/")
		if code, so, se := e.bob.exitCode(args...); code != 0 || so != "" || se != "" {
			t.Fatalf("tunnel scp F0 F1 F2 LOGIN@web-1:DIR/: exit %d, stdout %q, stderr %q; want silence (no terminal, no progress)", code, so, se)
		}
		args = []string{"scp"}
		for _, f := range files {
			args = append(args, e.login+"@web-1:"+filepath.Join(up, filepath.Base(f)))
		}
		args = append(args, down)
		if code, so, se := e.bob.exitCode(args...); code != 0 || so != "" || se != "" {
			t.Fatalf("tunnel scp LOGIN@web-1:F0 ... DIR: exit %d, stdout %q, stderr %q", code, so, se)
		}
		for _, f := range files {
			want, _ := os.ReadFile(f)
			got, err := os.ReadFile(filepath.Join(down, filepath.Base(f)))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s came back different (%v)", filepath.Base(f), err)
			}
		}
		// Several sources need a directory to land in.
		code, _, se := e.bob.exitCode("scp", files[0], files[1], e.login+"@web-1:"+filepath.Join(dir, "nodir"))
		if want := "remote directory " + filepath.Join(dir, "nodir") + " does not exist on web-1: with several sources DST must be an existing directory"; code == 0 || !strings.Contains(se, want) {
			t.Errorf("tunnel scp F0 F1 LOGIN@web-1:MISSING: exit %d, stderr %q; want %q", code, se, want)
		}

		// On a terminal, a progress line per file.
		pty := e.bob.startPTY(t, "scp", files[2], e.login+"@web-1:"+filepath.Join(dir, "pty.bin"))
		if err := pty.wait(time.Minute); err != nil {
			t.Fatalf("tunnel scp on a terminal: %v\n%s", err, pty.output())
		}
		// The terminal's last bytes may still be on their way to the
		// reader once the process has exited: wait for them.
		progress := regexp.MustCompile(`f2\.bin +300\.0 KiB / 300\.0 KiB 100% +[0-9.]+ [KMG]?i?B/s`)
		deadline := time.Now().Add(20 * time.Second)
		for !progress.MatchString(pty.output()) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !progress.MatchString(pty.output()) {
			t.Errorf("tunnel scp on a terminal showed %q; want a progress line for f2.bin at 100%% with a rate", pty.output())
		}
		// -q silences it.
		pty = e.bob.startPTY(t, "scp", "-q", files[2], e.login+"@web-1:"+filepath.Join(dir, "pty2.bin"))
		if err := pty.wait(time.Minute); err != nil {
			t.Fatalf("tunnel scp -q on a terminal: %v\n%s", err, pty.output())
		}
		if strings.Contains(pty.output(), "%") {
			t.Errorf("tunnel scp -q on a terminal showed %q; want no progress", pty.output())
		}
	})

	t.Run("proxy db checks its target first", func(t *testing.T) {
		port := fmt.Sprint(freeLoopbackPort(t))
		for target, want := range map[string]string{
			"nosuch/echo":  "your roles let you reach no node named nosuch (tunnel ls lists those they do)",
			"web-1/nosuch": "node web-1 has no service nosuch that your roles let you open; they let you open: echo",
			"web-1":        `"web-1" is not NODE/SERVICE`,
		} {
			if code, _, se := e.bob.exitCode("proxy", "db", target, "--port", port); code == 0 || !strings.Contains(se, want) {
				t.Errorf("tunnel proxy db %s: exit %d, %q; want %q", target, code, se, want)
			}
		}
		if code, _, se := e.bob.exitCode("proxy", "db", "web-1/echo", "--port", "70000"); code == 0 || !strings.Contains(se, "--port 70000 is not a port") {
			t.Errorf("tunnel proxy db --port 70000: exit %d, %q", code, se)
		}
		busy, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		if code, _, se := e.bob.exitCode("proxy", "db", "web-1/echo", "--port", port); code == 0 || !strings.Contains(se, "127.0.0.1:"+port+" is already in use by another program: stop it, or choose another --port") {
			t.Errorf("tunnel proxy db on a port in use: exit %d, %q", code, se)
		}
	})

	// Last: it locks bob.
	t.Run("proxy db says why the gateway cut it", func(t *testing.T) {
		port := freeLoopbackPort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		wait, out := e.bob.backgroundOut("proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
		dialRetry(t, addr, echoOnce, 20*time.Second)
		var conns []net.Conn
		for range 2 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := echoOnce(c); err != nil {
				t.Fatalf("stream before the lock: %v", err)
			}
			conns = append(conns, c)
		}
		e.admin.must("admin", "users", "lock", "bob")
		line := "connection to web-1/echo closed by the gateway: access revoked by an administrator"
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(out(), line) < 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := strings.Count(out(), line); n != 2 {
			t.Errorf("tunnel proxy printed %q %d times for 2 connections cut; its output:\n%s", line, n, out())
		}
		// Every later connection would be refused: it stops, and says why.
		code, output := wait(60 * time.Second)
		// The reason is the gateway's: the lock's, or the revocation of
		// the certificate that comes with it, whichever closes first.
		if code == 0 || !strings.Contains(output, "tunnel: the gateway no longer accepts your login certificate: ") || !strings.Contains(output, "then start tunnel proxy again") {
			t.Errorf("tunnel proxy after its user was locked: exit %d; want it to stop and say why:\n%s", code, output)
		}
	})
}

// TestStatusAsksTheGateway: tunnel status tells a user whose account was
// removed or locked that the gateway no longer accepts them (it said
// "valid"), and says when the gateway could not be asked.
func TestStatusAsksTheGateway(t *testing.T) {
	c := startCluster(t, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	admin.must("admin", "roles", "add", "dev", "--login", "ubuntu")
	bob := addUser(t, admin, "bob", "dev")
	bob.login()
	carol := addUser(t, admin, "carol", "dev")
	carol.login()

	type statusJSON struct {
		Valid   bool `json:"valid"`
		Account struct {
			State   string   `json:"state"`
			Message string   `json:"message"`
			Roles   []string `json:"roles"`
		} `json:"account"`
	}
	status := func(u *user) (int, string, string, statusJSON) {
		t.Helper()
		code, so, se := u.exitCode("status")
		_, js, _ := u.exitCode("status", "--json")
		var s statusJSON
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatalf("tunnel status --json printed %q: %v", js, err)
		}
		return code, so, se, s
	}

	code, so, _, s := status(bob)
	if code != 0 || !strings.Contains(so, "Account:  active") || !s.Valid || s.Account.State != "active" || strings.Join(s.Account.Roles, ",") != "dev" {
		t.Errorf("status of an active user: exit %d, %+v\n%s", code, s, so)
	}

	check := func(u *user, what string) {
		t.Helper()
		code, so, se, s := status(u)
		// The gateway's sentence, whichever check refuses first.
		refusals := []string{
			"your certificate was revoked by an administrator: run tunnel login",
			"user " + u.name + " no longer exists: run tunnel login",
			"your account is locked: ask an administrator",
		}
		known := false
		for _, r := range refusals {
			known = known || s.Account.Message == r
		}
		if code == 0 || s.Valid || (s.Account.State != "refused" && s.Account.State != "locked") || !known {
			t.Errorf("status of a user whose account was %s: exit %d, %+v; want refused with one of %q", what, code, s, refusals)
		}
		if !strings.Contains(so, "Account:  "+s.Account.Message) || strings.Contains(so, "Valid:    until") {
			t.Errorf("status of a user whose account was %s shows:\n%s", what, so)
		}
		if want := "tunnel: the gateway refuses your certificate: " + s.Account.Message; !strings.Contains(se, want) {
			t.Errorf("status of a user whose account was %s: stderr %q; want %q", what, se, want)
		}
	}
	admin.must("admin", "users", "rm", "bob")
	check(bob, "removed")
	admin.must("admin", "users", "lock", "carol")
	check(carol, "locked")

	// The gateway away: the local view, said to be only that.
	c.stop()
	code, so, _, s = status(admin)
	if code != 0 || !s.Valid || s.Account.State != "unreachable" || !strings.Contains(s.Account.Message, "cannot reach the gateway at "+c.addr) {
		t.Errorf("status with the gateway stopped: exit %d, %+v; want valid, unreachable", code, s)
	}
	if !strings.Contains(so, "Valid:    until") || !strings.Contains(so, "Account:  not checked: cannot reach the gateway at "+c.addr) || !strings.Contains(so, "this machine's view only") {
		t.Errorf("status with the gateway stopped shows:\n%s", so)
	}
}

// TestFuzzScript runs scripts/fuzz.sh (what make fuzz runs) on a small
// module with a passing target, a target that finds a failing input, and
// one whose worker is killed once without a failing input (what a loaded
// machine does): the crasher fails with its file, the engine failure is
// retried and passes, and go test's output is shown for both.
func TestFuzzScript(t *testing.T) {
	dir := t.TempDir()
	// The module is in testdata (which the go tool, and the fuzz script's
	// own search for targets, skip): a passing target, a target with a
	// failing input, and one whose worker is killed once. SIGKILL is not
	// a crash signal: go test records no failing input for it.
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "fuzzscript"))); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(clientRepoRoot(t), "scripts", "fuzz.sh")
	run := func(pkgs ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{script}, pkgs...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "FUZZTIME=2s", "GOWORK=off", "GOFLAGS=", "FLAKY_MARK="+filepath.Join(dir, "mark"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("./ok", "./flaky")
	if err != nil {
		t.Fatalf("a passing target and an engine failure: %v; want success\n%s", err, out)
	}
	for _, want := range []string{
		"fuzzing process terminated by unexpected signal", // go test's own output, shown
		"fuzz: FuzzFlaky in example.com/fz/flaky: engine failure (fuzzing process terminated by unexpected signal), no failing input written; retrying",
		"fuzz example.com/fz/flaky FuzzFlaky (2s, attempt 2)",
		"fuzz: all targets passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fuzz.sh output lacks %q:\n%s", want, out)
		}
	}

	out, err = run("./crash")
	crashers, _ := filepath.Glob(filepath.Join(dir, "crash", "testdata", "fuzz", "FuzzCrash", "*"))
	if err == nil || len(crashers) != 1 {
		t.Fatalf("a target with a failing input: %v, files %q; want a failure and one file\n%s", err, crashers, out)
	}
	for _, want := range []string{
		"crash_test.go:9: found", // go test's own output, shown
		"FAIL: FuzzCrash in example.com/fz/crash found a failing input, written to:\n  " + crashers[0],
		"fuzz: FAILED:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fuzz.sh output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "attempt 2") {
		t.Errorf("fuzz.sh retried a crasher:\n%s", out)
	}
}
