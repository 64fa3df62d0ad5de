package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// auditFollower runs tunnel admin audit ls --follow --json and collects
// the events it prints.
type auditFollower struct {
	cmd    *exec.Cmd
	stderr syncBuffer
	mu     sync.Mutex
	evs    []audit.Event
	bad    []string
	done   chan struct{}
}

func startAuditFollower(t *testing.T, u *user, args ...string) *auditFollower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &auditFollower{done: make(chan struct{})}
	f.cmd = exec.CommandContext(ctx, bin("tunnel"), append([]string{"admin", "audit", "ls", "--follow", "--json"}, args...)...)
	f.cmd.Env = append(cleanEnv(), "TUNNEL_HOME="+u.home)
	f.cmd.Stderr = &f.stderr
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e audit.Event
			f.mu.Lock()
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Seq == 0 {
				f.bad = append(f.bad, sc.Text())
			} else {
				f.evs = append(f.evs, e)
			}
			f.mu.Unlock()
		}
		_ = f.cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-f.done
		if t.Failed() {
			t.Logf("follower stderr:\n%s", f.stderr.String())
		}
	})
	return f
}

func (f *auditFollower) events() []audit.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]audit.Event(nil), f.evs...)
}

// has reports whether an event of type typ about subject was printed.
func (f *auditFollower) has(typ audit.Type, subject string) bool {
	for _, e := range f.events() {
		if e.Type == typ && e.Subject == subject {
			return true
		}
	}
	return false
}

// lastAuditSeq is the seq of the last event in the log.
func lastAuditSeqOf(t *testing.T, admin *user) int64 {
	t.Helper()
	var evs []audit.Event
	if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 {
		t.Fatal("empty audit log")
	}
	return evs[len(evs)-1].Seq
}

// readAuditFile returns the events of the JSON-lines files, in order.
func readAuditFile(t *testing.T, paths ...string) []audit.Event {
	t.Helper()
	var evs []audit.Event
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var e audit.Event
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("%s line %d is not an event: %v: %q", p, i+1, err, line)
			}
			evs = append(evs, e)
		}
	}
	return evs
}

// checkOnce fails t unless evs are the events 1..n each exactly once, in
// order, and chain.
func checkOnce(t *testing.T, evs []audit.Event, n int64) {
	t.Helper()
	if int64(len(evs)) != n {
		t.Errorf("%d events; want %d", len(evs), n)
	}
	for i, e := range evs {
		if e.Seq != int64(i)+1 {
			t.Fatalf("event %d has seq %d; want %d (each event exactly once, in order)", i+1, e.Seq, i+1)
		}
	}
	if len(evs) > 0 {
		if err := audit.Verify(evs, evs[len(evs)-1].Hash); err != nil {
			t.Errorf("the exported events do not chain: %v", err)
		}
	}
}

// TestAuditExport: two gateways on one PostgreSQL. A running tunnel admin
// audit ls --follow --json, served by gateway 1, prints the events
// gateway 2 commits, and goes on from where it was across a restart of
// gateway 1 (nothing twice, nothing missed). Gateway 1's --audit-log file
// gets every event of the cluster exactly once, across its restart (with
// a partial last line left by a crash), a rotation (the file moved away)
// a SIGHUP, and a rotation under another name while it was down; it is
// 0600.
func TestAuditExport(t *testing.T) {
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)
	url := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", srv.User, srv.Password, srv.Addr, dbs.create(t))
	gws := initSharedGateways(t, url, 2)
	logFile := filepath.Join(t.TempDir(), "audit.jsonl")
	common := []string{"--store", url, "--heartbeat-interval", "1s", "--login-burst", "1000"}
	gw1Args := append([]string{"--id", "gw-1", "--name", "127.0.0.11", "--audit-log", logFile}, common...)
	gws[0].start(append([]string{"--api-addr", "127.0.0.11:0"}, gw1Args...)...)
	gws[1].start(append([]string{"--id", "gw-2", "--api-addr", "127.0.0.12:0", "--name", "127.0.0.12"}, common...)...)
	gw1, gw2 := gws[0], gws[1]

	admin1 := gw1.adminUser()
	admin1.login()
	admin2 := gw2.newUserHandle(gw1.admin, gw1.adminPW, gw1.adminOTP)
	admin2.login()

	// Follow from the current end: only what comes next.
	f := startAuditFollower(t, admin1, "--after", strconv.FormatInt(lastAuditSeqOf(t, admin1), 10))
	admin2.must("admin", "roles", "add", "export-a", "--login", "a")
	waitFor(t, 30*time.Second, "gateway 2's role.created to reach the follower", func() bool { return f.has(audit.RoleCreated, "export-a") })

	// Gateway 1 stops; gateway 2 goes on; a crash left a partial line at
	// the end of the file.
	if err := gw1.stop(); err != nil {
		t.Fatalf("gateway 1 stop: %v", err)
	}
	admin2.must("admin", "roles", "add", "export-b", "--login", "b")
	fh, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(`{"seq":99999,"type":"half-writ`); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	gw1.start(append([]string{"--api-addr", gw1.addr}, gw1Args...)...)
	admin2.must("admin", "roles", "add", "export-c", "--login", "c")
	waitFor(t, 60*time.Second, "the events of the restart to reach the follower", func() bool {
		return f.has(audit.RoleCreated, "export-b") && f.has(audit.RoleCreated, "export-c")
	})
	evs := f.events()
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Errorf("the follower printed seq %d after %d; want every event once, in order", evs[i].Seq, evs[i-1].Seq)
		}
	}
	if len(f.bad) > 0 {
		t.Errorf("the follower printed lines that are not events: %q", f.bad)
	}

	// The file: every event exactly once so far.
	last := lastAuditSeqOf(t, admin1)
	waitFor(t, 30*time.Second, "the audit log file to catch up", func() bool {
		evs := readAuditFile(t, logFile)
		return len(evs) > 0 && evs[len(evs)-1].Seq >= last
	})
	checkOnce(t, readAuditFile(t, logFile), last)
	if fi, err := os.Stat(logFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log file mode %v (%v); want 0600", fi.Mode().Perm(), err)
	}

	// Rotation: the file is moved away; the next events go to a new file.
	rotated := logFile + ".1"
	if err := os.Rename(logFile, rotated); err != nil {
		t.Fatal(err)
	}
	admin2.must("admin", "roles", "add", "export-d", "--login", "d")
	waitFor(t, 30*time.Second, "a new audit log file after the rotation", func() bool {
		_, err := os.Stat(logFile)
		return err == nil && len(readAuditFile(t, logFile)) > 0
	})
	// SIGHUP reopens (and does not stop the gateway).
	if err := gw1.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the gateway to log the reopen", func() bool { return strings.Contains(gw1.log.String(), "why=SIGHUP") })
	admin2.must("admin", "roles", "add", "export-e", "--login", "e")
	last = lastAuditSeqOf(t, admin2)
	waitFor(t, 30*time.Second, "the audit log file to catch up after the rotation", func() bool {
		evs := readAuditFile(t, logFile)
		return evs[len(evs)-1].Seq >= last
	})
	checkOnce(t, readAuditFile(t, rotated, logFile), last)
	select {
	case <-gw1.done:
		t.Fatalf("gateway 1 exited after SIGHUP: %v", gw1.waitErr)
	default:
	}

	// Rotated while gateway 1 was down, under a dateext name (no FILE.1
	// to read): FILE.pos says where to go on; nothing is exported again.
	if err := gw1.stop(); err != nil {
		t.Fatalf("gateway 1 stop: %v", err)
	}
	if fi, err := os.Stat(logFile + ".pos"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("FILE.pos: %v; want a 0600 file", err)
	}
	dated := logFile + "-20261201"
	if err := os.Rename(logFile, dated); err != nil {
		t.Fatal(err)
	}
	admin2.must("admin", "roles", "add", "export-f", "--login", "f")
	gw1.start(append([]string{"--api-addr", gw1.addr}, gw1Args...)...)
	last = lastAuditSeqOf(t, admin2)
	waitFor(t, 30*time.Second, "the audit log file to catch up after a rotation while down", func() bool {
		if _, err := os.Stat(logFile); err != nil {
			return false
		}
		evs := readAuditFile(t, logFile)
		return len(evs) > 0 && evs[len(evs)-1].Seq >= last
	})
	checkOnce(t, readAuditFile(t, rotated, dated, logFile), last)
}
