// Package pgtest runs a throwaway PostgreSQL server on a loopback port for
// end-to-end tests, and runs the real psql and pgbench clients against it (or
// against any address that forwards to it, such as a tunnel listener).
//
// Start runs initdb in a fresh temp dir and starts `postgres -D` as a child
// process listening on 127.0.0.1 on a free port, with its unix socket in the
// temp dir. Durability is switched off (fsync, synchronous_commit,
// full_page_writes) and max_connections is 300, so tests can open a couple of
// hundred connections at once.
//
// Authentication: the superuser (Superuser, "postgres") can only connect over
// the unix socket (trust); TCP connections use scram-sha-256 passwords. Start
// creates the login role User ("app", password Password "app-password") owning
// the database Database ("app"), which is what PSQL and Pgbench use.
//
// PostgreSQL refuses to run as root, so as root initdb and postgres run as the
// "postgres" system user (created by Debian's postgresql-common package) and
// the temp dir is owned by it; it is created under a directory that user can
// reach. Otherwise they run as the current user.
//
// The server log is saved in the temp dir and printed with t.Log when the test
// fails. t.Cleanup stops the server (fast shutdown), waits for it and removes
// the temp dir.
//
// For tests of what clients do when their database goes away and comes back,
// Stop stops the server (every client connection is cut) and StartAgain starts
// it again on the same port and data directory; Restart does both.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// Fixed credentials of the servers started by Start.
const (
	DefaultUser     = "app"
	DefaultPassword = "app-password"
	DefaultDatabase = "app"
	Superuser       = "postgres"
)

// BinDirEnv, if set, names the directory holding initdb, postgres, psql and
// pgbench, overriding the search of /usr/lib/postgresql/*/bin and PATH.
const BinDirEnv = "PGTEST_BIN_DIR"

// The timeouts are generous: in CI many test packages (and their servers)
// share a couple of CPUs, and -race slows everything down.
const (
	initTimeout   = 3 * time.Minute
	startTimeout  = 2 * time.Minute
	clientTimeout = 2 * time.Minute
)

// logTailLines and logTailBytes bound how much of a tool's log goes into an
// error message.
const (
	logTailLines = 60
	logTailBytes = 8 << 10
)

// Server is a running PostgreSQL server.
type Server struct {
	Addr string // "127.0.0.1:PORT"
	Host string // "127.0.0.1"
	Port int

	User     string // "app": a password login role (TCP, scram-sha-256)
	Password string // "app-password"
	Database string // "app", owned by User

	Dir       string // temp dir holding the data dir, socket and log
	DataDir   string // Dir/data
	SocketDir string // unix_socket_directories (== Dir)
	LogFile   string // postgres's stderr
	BinDir    string // where initdb/postgres were found

	PSQLPath    string // absolute path of psql
	PgbenchPath string // absolute path of pgbench ("" if not installed)

	cred     *syscall.Credential // who postgres runs as (nil: the current user)
	settings [][2]string         // the caller's extra settings, for StartAgain
	p        *proc
}

// proc is one postmaster process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // cmd.Wait result, valid after done is closed
	once sync.Once
}

// Option changes how Start configures the server.
type Option func(*config)

type config struct {
	settings [][2]string // postgres -c name=value, in order (later wins)
	hostAuth string
}

// WithSetting adds a server setting (postgres -c name=value), overriding the
// defaults, e.g. WithSetting("max_connections", "500").
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// WithHostAuth sets the pg_hba method for TCP connections (initdb
// --auth-host): "scram-sha-256" (default), "md5", "password" or "trust".
func WithHostAuth(method string) Option {
	return func(c *config) { c.hostAuth = method }
}

// Start initializes a new cluster in a temp dir, starts postgres on a free
// 127.0.0.1 port, waits until it accepts connections and creates the app role
// and database. The server is stopped and its files removed in t.Cleanup; its
// log is printed if the test failed.
//
// If PostgreSQL is not installed the test is skipped, or failed when CI is
// set.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := config{hostAuth: "scram-sha-256"}
	for _, o := range opts {
		o(&cfg)
	}

	bin := findBinDir(t)
	s := &Server{
		Host:     "127.0.0.1",
		User:     DefaultUser,
		Password: DefaultPassword,
		Database: DefaultDatabase,
		BinDir:   bin,
	}
	s.PSQLPath = clientPath(t, bin, "psql", true)
	s.PgbenchPath = clientPath(t, bin, "pgbench", false)

	cred := serverCredential(t)
	s.cred, s.settings = cred, cfg.settings
	s.Dir = makeDir(t, cred)
	s.DataDir = filepath.Join(s.Dir, "data")
	s.SocketDir = s.Dir
	s.LogFile = filepath.Join(s.Dir, "postgres.log")

	start := time.Now()
	if err := s.initDB(t, cred, cfg.hostAuth); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	initDur := time.Since(start)

	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.Port = testenv.FreePort(t)
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		err := s.start(t, cred, cfg.settings, false)
		if err == nil {
			break
		}
		log := s.Log()
		if attempt < attempts && strings.Contains(log, "could not bind") {
			t.Logf("pgtest: port %d taken, retrying: %v", s.Port, err)
			continue
		}
		t.Fatalf("pgtest: starting postgres (attempt %d, dir %s): %v\n--- tail of postgres log %s ---\n%s",
			attempt, s.Dir, err, s.LogFile, tailFile(s.LogFile))
	}

	// CREATE DATABASE cannot run inside a transaction block, so each
	// statement is its own -c.
	if _, err := s.superPSQL(
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", quoteIdent(s.User), strings.ReplaceAll(s.Password, "'", "''")),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", quoteIdent(s.Database), quoteIdent(s.User)),
	); err != nil {
		t.Fatalf("pgtest: creating role and database: %v", err)
	}
	t.Logf("pgtest: postgres (%s) on %s ready in %v (initdb %v), dir %s",
		filepath.Base(filepath.Dir(bin)), s.Addr, time.Since(start).Round(time.Millisecond),
		initDur.Round(time.Millisecond), s.Dir)
	return s
}

// initDB runs initdb into s.DataDir, retrying once (in a fresh data dir) if
// it fails, so that a one-off failure under load does not fail the test. The
// error holds the tail of each attempt's log.
func (s *Server) initDB(t testing.TB, cred *syscall.Credential, hostAuth string) error {
	t.Helper()
	args := []string{
		"-D", s.DataDir,
		"-U", Superuser,
		"--auth-local=trust",
		"--auth-host=" + hostAuth,
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	}
	const attempts = 2
	var errs []string
	for attempt := 1; attempt <= attempts; attempt++ {
		logFile := filepath.Join(s.Dir, fmt.Sprintf("initdb.%d.log", attempt))
		begin := time.Now()
		err := s.runServerCmd(cred, logFile, initTimeout, filepath.Join(s.BinDir, "initdb"), args...)
		if err == nil {
			return nil
		}
		msg := fmt.Sprintf("initdb (attempt %d of %d, after %v, datadir %s): %v\n--- tail of %s ---\n%s",
			attempt, attempts, time.Since(begin).Round(time.Millisecond), s.DataDir, err,
			logFile, tailFile(logFile))
		errs = append(errs, msg)
		if errors.Is(err, context.DeadlineExceeded) || attempt == attempts {
			break
		}
		t.Logf("pgtest: retrying in a fresh data dir after: %s", msg)
		// initdb refuses a non-empty data dir (it normally removes its
		// own on failure, but not if it was killed).
		if err := os.RemoveAll(s.DataDir); err != nil {
			errs = append(errs, fmt.Sprintf("removing %s before retrying: %v", s.DataDir, err))
			break
		}
		time.Sleep(time.Second)
	}
	return errors.New(strings.Join(errs, "\n"))
}

// start runs postgres once and waits until it is ready. On error the process
// has been reaped. On success it registers the cleanup. With appendLog the
// log file is kept and added to (a restart), else it is truncated.
func (s *Server) start(t testing.TB, cred *syscall.Credential, extra [][2]string, appendLog bool) error {
	settings := [][2]string{
		{"listen_addresses", s.Host},
		{"port", strconv.Itoa(s.Port)},
		{"unix_socket_directories", s.SocketDir},
		{"max_connections", "300"},
		{"shared_buffers", "32MB"},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
		{"max_wal_senders", "0"},
		{"wal_level", "minimal"},
	}
	settings = append(settings, extra...)
	args := []string{"-D", s.DataDir}
	for _, kv := range settings {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}

	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !appendLog {
		flags |= os.O_TRUNC
	}
	logf, err := os.OpenFile(s.LogFile, flags, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy

	cmd := exec.Command(filepath.Join(s.BinDir, "postgres"), args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = s.Dir
	cmd.Env = s.serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	s.p = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	if err := s.waitReady(startTimeout); err != nil {
		s.stop()
		return err
	}
	if appendLog {
		return nil // the first start's cleanup stops whichever process runs
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("pgtest: postgres on %s log (%s):\n%s", s.Addr, s.LogFile, s.Log())
		}
	})
	return nil
}

// waitReady polls postmaster.pid until the postmaster reports "ready", then
// checks that the TCP port accepts connections.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	alive := func() error {
		select {
		case <-s.p.done:
			return fmt.Errorf("postgres exited before accepting connections: %v", s.p.err)
		default:
			return nil
		}
	}
	delay := 5 * time.Millisecond
	for {
		if err := alive(); err != nil {
			return err
		}
		if pmReady(filepath.Join(s.DataDir, "postmaster.pid")) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready within %v", timeout)
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
	return testenv.PollTCP(s.Addr, time.Until(deadline)+time.Second, alive)
}

// pmReady reports whether postmaster.pid says the server accepts connections
// (line 8, PM_STATUS_READY, since PostgreSQL 10).
func pmReady(pidFile string) bool {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return len(lines) >= 8 && strings.TrimSpace(lines[7]) == "ready"
}

// stop shuts postgres down (fast shutdown: SIGINT) and reaps it, escalating to
// immediate shutdown and then SIGKILL of the process group. Idempotent.
func (s *Server) stop() {
	p := s.p
	if p == nil {
		return
	}
	p.once.Do(func() {
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGINT)
		select {
		case <-p.done:
			return
		case <-time.After(15 * time.Second):
		}
		_ = syscall.Kill(pid, syscall.SIGQUIT)
		select {
		case <-p.done:
			return
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	})
}

// Stop stops postgres now and waits for it to exit (it is also stopped in
// t.Cleanup). The temp dir is kept until the cleanup, so StartAgain can
// start the same server again.
func (s *Server) Stop() { s.stop() }

// StartAgain starts a server stopped by Stop again: the same data directory,
// port, settings and credentials, so clients that knew its address (with
// their connections cut by the stop) find it where it was. It waits until
// the server accepts connections; the log file is appended to. Binding the
// port is retried for a while (a socket of the old server may linger), but
// the port is never changed: a failure fails t. The server is still stopped
// in the cleanup of the test that called Start.
func (s *Server) StartAgain(t testing.TB) {
	t.Helper()
	select {
	case <-s.p.done:
	default:
		t.Fatalf("pgtest: StartAgain on %s while postgres is still running: call Stop first", s.Addr)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.start(t, s.cred, s.settings, true)
		if err == nil {
			return
		}
		if time.Now().Before(deadline) && strings.Contains(tailFile(s.LogFile), "could not bind") {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		t.Fatalf("pgtest: starting postgres again on %s (dir %s): %v\n--- tail of postgres log %s ---\n%s",
			s.Addr, s.Dir, err, s.LogFile, tailFile(s.LogFile))
	}
}

// Restart stops the server (fast shutdown: every client connection is cut)
// and starts it again on the same port and data directory: Stop then
// StartAgain.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.StartAgain(t)
}

// PID returns the postmaster's process id; it is also the process group id
// of the postmaster and all its backends.
func (s *Server) PID() int { return s.p.cmd.Process.Pid }

// Log returns what postgres has logged so far.
func (s *Server) Log() string { return readFile(s.LogFile) }

// URL returns a libpq connection URI for User on addr ("" means s.Addr),
// e.g. "postgres://app:app-password@127.0.0.1:5432/app?sslmode=disable".
func (s *Server) URL(addr string) string {
	if addr == "" {
		addr = s.Addr
	}
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", s.User, s.Password, addr, s.Database)
}

// PSQL runs the real psql client as User against addr ("host:port"; "" means
// s.Addr), so addr can be a tunnel listener forwarding to s. sql is fed on
// stdin (so it may hold several statements, each autocommitted) with -X -q -A
// -t -v ON_ERROR_STOP=1; PSQL returns psql's stdout without the final
// newline: one line per row, columns separated by "|". Any error fails the
// test, with psql's stderr.
func (s *Server) PSQL(t testing.TB, addr, sql string) string {
	t.Helper()
	out, err := s.TryPSQL(addr, sql)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return out
}

// TryPSQL is PSQL returning an error (including psql's stderr) instead of
// failing the test, for tests that expect the connection or query to fail.
// To try other credentials, call it on a copy of s with User/Password/Database
// changed.
func (s *Server) TryPSQL(addr, sql string) (string, error) {
	if addr == "" {
		addr = s.Addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("psql: bad address %q: %v", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.PSQLPath,
		"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", host, "-p", port, "-U", s.User, "-d", s.Database, "-f", "-")
	cmd.Env = s.clientEnv(host, port)
	cmd.Stdin = strings.NewReader(sql)
	return runClient(cmd, "psql to "+addr)
}

// SuperPSQL runs sql as the superuser over the unix socket (the superuser
// cannot log in over TCP) and returns stdout like PSQL. Each element of sql
// is a separate psql -c, so commands like CREATE DATABASE work.
func (s *Server) SuperPSQL(t testing.TB, sql ...string) string {
	t.Helper()
	out, err := s.superPSQL(sql...)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return out
}

func (s *Server) superPSQL(sql ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	args := []string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", s.SocketDir, "-p", strconv.Itoa(s.Port), "-U", Superuser, "-d", "postgres"}
	for _, q := range sql {
		args = append(args, "-c", q)
	}
	cmd := exec.CommandContext(ctx, s.PSQLPath, args...)
	cmd.Env = cleanEnv()
	return runClient(cmd, "psql (superuser, unix socket)")
}

// PgbenchArgs returns the connection arguments and the environment for
// running pgbench against addr ("" means s.Addr) as User on Database: run
// exec.Command(s.PgbenchPath, append(args, "-i", "-s", "1")...) with Env set
// to env, then e.g. "-S", "-c", "8", "-T", "5". The database name is passed
// in PGDATABASE, so any pgbench options may be appended.
func (s *Server) PgbenchArgs(addr string) (args, env []string) {
	if addr == "" {
		addr = s.Addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, strconv.Itoa(s.Port)
	}
	return []string{"-h", host, "-p", port, "-U", s.User}, s.clientEnv(host, port)
}

// PgbenchCmd returns an exec.Cmd running pgbench against addr ("" means
// s.Addr) with the connection arguments from PgbenchArgs followed by args.
// Stdout and Stderr are left for the caller to set.
func (s *Server) PgbenchCmd(ctx context.Context, t testing.TB, addr string, args ...string) *exec.Cmd {
	t.Helper()
	if s.PgbenchPath == "" {
		testenv.Missing(t, "pgbench not found in %s or PATH (Debian package postgresql-contrib / postgresql)", s.BinDir)
	}
	conn, env := s.PgbenchArgs(addr)
	cmd := exec.CommandContext(ctx, s.PgbenchPath, append(conn, args...)...)
	cmd.Env = env
	return cmd
}

// Pgbench runs pgbench against addr ("" means s.Addr) with args appended to
// the connection arguments (e.g. "-i", "-s", "1" to initialize, or "-S",
// "-c", "8", "-T", "5" for a select-only run) and returns its combined
// output. A failure fails the test with the output.
func (s *Server) Pgbench(t testing.TB, addr string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := s.PgbenchCmd(ctx, t, addr, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: pgbench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var tpsRE = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)

// PgbenchTPS extracts the "tps = N (without initial connection time)" figure
// from pgbench's output.
func PgbenchTPS(out string) (float64, error) {
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, errors.New("pgbench output has no tps line")
	}
	return strconv.ParseFloat(m[1], 64)
}

// clientEnv is the environment for psql/pgbench: the test's environment
// without PG* variables, plus the password and connection target.
func (s *Server) clientEnv(host, port string) []string {
	return append(cleanEnv(),
		"PGPASSWORD="+s.Password,
		"PGHOST="+host,
		"PGPORT="+port,
		"PGUSER="+s.User,
		"PGDATABASE="+s.Database,
		"PGCONNECT_TIMEOUT=15",
		"PGAPPNAME=pgtest",
	)
}

// cleanEnv is os.Environ without libpq's PG* variables (a PGSERVICE or
// PGSSLMODE in the developer's shell must not change what the tests do).
func cleanEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PG") })
}

// serverEnv is the environment for initdb/postgres. TZ is set because
// otherwise initdb spends seconds scanning the time zone database; TMPDIR is
// the server's own dir, so nothing of theirs touches the shared /tmp.
func (s *Server) serverEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") ||
			strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "LANGUAGE=") ||
			strings.HasPrefix(kv, "TZ=") || strings.HasPrefix(kv, "TMPDIR=")
	})
	return append(env, "LC_ALL=C", "TZ=UTC", "TMPDIR="+s.Dir)
}

// runServerCmd runs a server-side program (initdb) as cred with its output in
// logFile.
func (s *Server) runServerCmd(cred *syscall.Credential, logFile string, timeout time.Duration, name string, args ...string) error {
	logf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = s.Dir
	cmd.Env = s.serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	// initdb runs postgres in bootstrap mode as a child; on timeout kill the
	// whole process group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd.Run()
}

// runClient runs a client and returns its stdout without the final newline,
// or an error with its stderr.
func runClient(cmd *exec.Cmd, what string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %v\nstderr:\n%s", what, err, stderr.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n"), nil
}

// serverCredential returns the credential initdb/postgres run with: the
// postgres system user when running as root, nil (the current user)
// otherwise.
func serverCredential(t testing.TB) *syscall.Credential {
	t.Helper()
	if !testenv.IsRoot() {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		testenv.Missing(t, "running as root and there is no postgres system user to run PostgreSQL as (%v)", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("pgtest: postgres user has non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// makeDir creates the server's temp dir, owned by cred's user, and registers
// its removal. t.TempDir is not used: its parents are 0700 (unreachable for
// the postgres user when running as root) and its long names could push the
// unix socket path over the 107-byte limit.
func makeDir(t testing.TB, cred *syscall.Credential) string {
	t.Helper()
	parents := []string{os.TempDir()}
	if parents[0] != "/tmp" {
		parents = append(parents, "/tmp")
	}
	var dir string
	var reasons []string
	for _, parent := range parents {
		if cred != nil {
			if err := reachable(parent); err != nil {
				reasons = append(reasons, err.Error())
				continue
			}
		}
		// Room for "/.s.PGSQL.65535.lock" in sun_path (108 bytes with NUL).
		if len(parent) > 60 {
			reasons = append(reasons, fmt.Sprintf("%s: path too long for a unix socket", parent))
			continue
		}
		d, err := os.MkdirTemp(parent, "pgtest-")
		if err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		dir = d
		break
	}
	if dir == "" {
		t.Fatalf("pgtest: no usable temp dir: %s", strings.Join(reasons, "; "))
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgtest: removing %s: %v", dir, err)
		}
	})
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("pgtest: chown %s: %v", dir, err)
		}
	}
	return dir
}

// reachable checks that other users can traverse every directory from / to
// dir (so the postgres user can reach a subdirectory it owns).
func reachable(dir string) error {
	d, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	d, err = filepath.Abs(d)
	if err != nil {
		return err
	}
	for {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %v) is not searchable by the postgres user", d, fi.Mode().Perm())
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

// findBinDir returns the directory holding initdb and postgres: $PGTEST_BIN_DIR,
// else the newest /usr/lib/postgresql/VERSION/bin (Debian), else the
// directory of initdb in PATH.
func findBinDir(t testing.TB) string {
	t.Helper()
	has := func(dir string) bool {
		for _, p := range []string{"initdb", "postgres"} {
			if _, err := testenv.FindProgram(filepath.Join(dir, p)); err != nil {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(BinDirEnv); d != "" {
		if !has(d) {
			t.Fatalf("pgtest: %s=%s does not contain initdb and postgres", BinDirEnv, d)
		}
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a))) // newest first
	})
	for _, d := range dirs {
		if has(d) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(p); has(d) {
			return d
		}
	}
	testenv.Missing(t, "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or PATH (Debian package postgresql)")
	return ""
}

// compareVersions compares dotted numeric versions ("9.6" < "15").
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return strings.Compare(a, b)
}

// clientPath finds a client program, preferring the server's bin dir (on
// Debian /usr/bin/psql is a wrapper script that looks for clusters).
func clientPath(t testing.TB, binDir, name string, required bool) string {
	t.Helper()
	if p, err := testenv.FindProgram(filepath.Join(binDir, name)); err == nil {
		return p
	}
	if p, err := testenv.FindProgram(name); err == nil {
		return p
	}
	if required {
		testenv.Missing(t, "%s not found in %s or PATH (Debian package postgresql-client)", name, binDir)
	}
	return ""
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	return string(b)
}

// tailFile returns the end of a log file (at most logTailLines lines and
// logTailBytes bytes), for error messages.
func tailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	return tail(string(b), logTailLines, logTailBytes)
}

func tail(s string, maxLines, maxBytes int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "(empty)"
	}
	cut := false
	if len(s) > maxBytes {
		s = s[len(s)-maxBytes:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		cut = true
	}
	if lines := strings.Split(s, "\n"); len(lines) > maxLines {
		s = strings.Join(lines[len(lines)-maxLines:], "\n")
		cut = true
	}
	if cut {
		s = "[...]\n" + s
	}
	return s
}
