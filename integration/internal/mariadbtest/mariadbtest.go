// Package mariadbtest runs a throwaway MariaDB server on a loopback port for
// end-to-end tests, and runs the real mariadb (mysql) client against it (or
// against any address that forwards to it, such as a tunnel listener).
//
// Start runs mariadb-install-db in a fresh temp dir and starts mariadbd as a
// child process listening on 127.0.0.1 on a free port, with its unix socket,
// pid file and tmpdir in the temp dir (nothing is shared between servers or
// with other programs). The server ignores all option files (--no-defaults),
// trades durability for speed and allows 300 connections. A failed
// mariadb-install-db is retried once; errors include the tail of its log.
//
// Authentication: root can only connect over the unix socket (no password;
// the TCP root accounts made by mariadb-install-db are dropped); Start
// creates the user User ("app", password Password "app-password", for any
// host) with all privileges on the database Database ("app"), which is what
// MySQL uses. Host names are not resolved (--skip-name-resolve).
//
// As root, mariadbd runs as root (--user=root); otherwise as the current user.
//
// The server's error log is saved in the temp dir and printed with t.Log when
// the test fails. t.Cleanup stops the server, waits for it and removes the
// temp dir.
package mariadbtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
)

// The timeouts are generous: in CI many test packages (and their servers)
// share a couple of CPUs, and -race slows everything down.
const (
	installTimeout = 3 * time.Minute
	startTimeout   = 2 * time.Minute
	clientTimeout  = 2 * time.Minute
)

// logTailLines and logTailBytes bound how much of a tool's log goes into an
// error message.
const (
	logTailLines = 60
	logTailBytes = 8 << 10
)

// Server is a running MariaDB server.
type Server struct {
	Addr string // "127.0.0.1:PORT"
	Host string // "127.0.0.1"
	Port int

	User     string // "app"@"%", all privileges on Database
	Password string // "app-password"
	Database string // "app"

	Dir     string // temp dir holding the data dir, socket and logs
	DataDir string // Dir/data
	TmpDir  string // Dir/tmp: mariadbd's --tmpdir (also for install-db)
	Socket  string // unix socket (root login)
	LogFile string // --log-error

	ServerPath string // absolute path of mariadbd / mysqld
	ClientPath string // absolute path of mariadb / mysql

	p *proc
}

// proc is one mariadbd process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // cmd.Wait result, valid after done is closed
	once sync.Once
}

// Option changes how Start configures the server.
type Option func(*config)

type config struct {
	args []string
}

// WithServerArgs adds mariadbd command-line options (e.g.
// "--max-connections=500"); they come after the defaults, so they override
// them.
func WithServerArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Start initializes a new data dir in a temp dir, starts mariadbd on a free
// 127.0.0.1 port, waits until it accepts connections and creates the app user
// and database. The server is stopped and its files removed in t.Cleanup;
// its log is printed if the test failed.
//
// If MariaDB is not installed the test is skipped, or failed when CI is set.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}

	s := &Server{
		Host:     "127.0.0.1",
		User:     DefaultUser,
		Password: DefaultPassword,
		Database: DefaultDatabase,
	}
	s.ServerPath = findProgram(t, "mariadbd", "mysqld")
	installDB := findProgram(t, "mariadb-install-db", "mysql_install_db")
	s.ClientPath = findProgram(t, "mariadb", "mysql")

	s.Dir = makeDir(t)
	s.DataDir = filepath.Join(s.Dir, "data")
	s.Socket = filepath.Join(s.Dir, "mysqld.sock")
	s.LogFile = filepath.Join(s.Dir, "error.log")

	s.TmpDir = filepath.Join(s.Dir, "tmp")
	if err := os.Mkdir(s.TmpDir, 0o700); err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}

	start := time.Now()
	if err := s.installDB(t, installDB); err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	installDur := time.Since(start)

	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.Port = testenv.FreePort(t)
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		err := s.start(t, cfg.args)
		if err == nil {
			break
		}
		log := s.Log()
		if attempt < attempts && (strings.Contains(log, "Address already in use") || strings.Contains(log, "Bind on TCP/IP port")) {
			t.Logf("mariadbtest: port %d taken, retrying: %v", s.Port, err)
			continue
		}
		t.Fatalf("mariadbtest: starting %s (attempt %d, dir %s): %v\n--- tail of error log %s ---\n%s\n--- tail of stdout/stderr %s ---\n%s",
			s.ServerPath, attempt, s.Dir, err, s.LogFile, tailFile(s.LogFile), s.stdoutFile(), tailFile(s.stdoutFile()))
	}

	// Only root@localhost (unix socket) stays; no anonymous users.
	drop, err := s.rootSQL("SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user " +
		"WHERE User = '' OR (User = 'root' AND Host <> 'localhost')")
	if err != nil {
		t.Fatalf("mariadbtest: listing users: %v", err)
	}
	var setup []string
	if drop != "" {
		setup = append(setup, "DROP USER "+strings.Join(strings.Split(drop, "\n"), ", "))
	}
	db, u, pw := quoteIdent(s.Database), quoteString(s.User), quoteString(s.Password)
	setup = append(setup, "CREATE DATABASE "+db)
	for _, host := range []string{"%", "localhost"} {
		setup = append(setup,
			fmt.Sprintf("CREATE USER %s@'%s' IDENTIFIED BY %s", u, host, pw),
			fmt.Sprintf("GRANT ALL PRIVILEGES ON %s.* TO %s@'%s'", db, u, host))
	}
	if _, err := s.rootSQL(strings.Join(setup, ";\n")); err != nil {
		t.Fatalf("mariadbtest: creating user and database: %v", err)
	}
	t.Logf("mariadbtest: %s on %s ready in %v (install-db %v), dir %s",
		filepath.Base(s.ServerPath), s.Addr, time.Since(start).Round(time.Millisecond),
		installDur.Round(time.Millisecond), s.Dir)
	return s
}

// innodbArgs keep the data dir small and the server fast to start; they are
// given to both mariadb-install-db (its bootstrap mariadbd) and mariadbd.
var innodbArgs = []string{
	"--innodb-log-file-size=16M",
	"--innodb-buffer-pool-size=32M",
	"--innodb-use-native-aio=0", // io_setup fails with several servers in a small container
}

// installDB runs mariadb-install-db into s.DataDir, retrying once (in a fresh
// data dir) if it fails, so that a one-off failure under load does not fail
// the test. The error holds the tail of each attempt's log.
//
// The bootstrap mariadbd gets its own --tmpdir (and TMPDIR): with the
// default tmpdir (/tmp) a starting mariadbd deletes every "#sql*" file there
// (mysql_rm_tmp_tables), i.e. the temporary tables of any other
// mariadb-install-db running at the same time, which then fails with
// "Could not remove temporary table: '/tmp/#sql-temptable-...', error: 2".
func (s *Server) installDB(t testing.TB, installDB string) error {
	t.Helper()
	// The InnoDB sizes must match those given to mariadbd (a larger redo
	// log would just be resized, a different page size would not start).
	args := []string{
		"--no-defaults", // must be first
		"--datadir=" + s.DataDir,
		"--tmpdir=" + s.TmpDir,
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--skip-name-resolve",
		"--innodb-doublewrite=0",
		"--innodb-flush-log-at-trx-commit=2",
	}
	args = append(args, innodbArgs...)
	if testenv.IsRoot() {
		args = append(args, "--user=root")
	}
	name := filepath.Base(installDB)
	const attempts = 2
	var errs []string
	for attempt := 1; attempt <= attempts; attempt++ {
		logFile := filepath.Join(s.Dir, fmt.Sprintf("install-db.%d.log", attempt))
		begin := time.Now()
		err := s.run(logFile, installTimeout, installDB, args...)
		if err == nil {
			return nil
		}
		msg := fmt.Sprintf("%s (attempt %d of %d, after %v, datadir %s): %v\n--- tail of %s ---\n%s",
			name, attempt, attempts, time.Since(begin).Round(time.Millisecond), s.DataDir, err,
			logFile, tailFile(logFile))
		errs = append(errs, msg)
		if errors.Is(err, context.DeadlineExceeded) || attempt == attempts {
			break
		}
		t.Logf("mariadbtest: retrying in a fresh data dir after: %s", msg)
		// Start again from scratch: a half-initialized data dir would
		// make mariadb-install-db stop early ("mysql.user table already
		// exists") or the bootstrap fail.
		if err := os.RemoveAll(s.DataDir); err != nil {
			errs = append(errs, fmt.Sprintf("removing %s before retrying: %v", s.DataDir, err))
			break
		}
		if err := clearDir(s.TmpDir); err != nil {
			errs = append(errs, fmt.Sprintf("emptying %s before retrying: %v", s.TmpDir, err))
			break
		}
		time.Sleep(time.Second)
	}
	return errors.New(strings.Join(errs, "\n"))
}

func (s *Server) stdoutFile() string { return filepath.Join(s.Dir, "mariadbd.out") }

// start runs mariadbd once and waits until it is ready. On error the
// process has been reaped. On success it registers the cleanup.
func (s *Server) start(t testing.TB, extra []string) error {
	args := []string{
		"--no-defaults", // must be first
		"--datadir=" + s.DataDir,
		"--socket=" + s.Socket,
		"--port=" + strconv.Itoa(s.Port),
		"--bind-address=" + s.Host,
		"--skip-networking=0",
		"--pid-file=" + filepath.Join(s.Dir, "mysqld.pid"),
		"--log-error=" + s.LogFile,
		"--skip-name-resolve",
		"--skip-log-bin",
		"--max-connections=300",
		"--innodb-flush-log-at-trx-commit=2",
		"--innodb-doublewrite=0",
		"--skip-innodb-buffer-pool-dump-at-shutdown",
		"--skip-innodb-buffer-pool-load-at-startup",
		"--loose-skip-feedback",
		"--tmpdir=" + s.TmpDir, // not /tmp: see installDB
	}
	args = append(args, innodbArgs...)
	if testenv.IsRoot() {
		args = append(args, "--user=root")
	}
	args = append(args, extra...)

	_ = os.Remove(s.LogFile) // mariadbd appends; keep only this attempt's log
	out, err := os.Create(s.stdoutFile())
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy

	cmd := exec.Command(s.ServerPath, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Dir = s.Dir
	cmd.Env = s.serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("mariadbtest: mariadbd on %s error log (%s):\n%s", s.Addr, s.LogFile, s.Log())
		}
	})
	return nil
}

// waitReady waits until the TCP port and the unix socket accept connections
// (mariadbd creates the socket file just before "ready for connections"),
// then until the server answers a query.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	alive := func() error {
		select {
		case <-s.p.done:
			return fmt.Errorf("mariadbd exited before accepting connections: %v", s.p.err)
		default:
			return nil
		}
	}
	if err := testenv.PollTCP(s.Addr, timeout, alive); err != nil {
		return err
	}
	delay := 5 * time.Millisecond
	for {
		if err := alive(); err != nil {
			return err
		}
		c, err := net.DialTimeout("unix", s.Socket, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbd socket %s not ready within %v: %v", s.Socket, timeout, err)
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
	_, err := s.rootSQL("SELECT 1")
	return err
}

// stop shuts mariadbd down (SIGTERM) and reaps it, escalating to SIGKILL of
// its process group. Idempotent.
func (s *Server) stop() {
	p := s.p
	if p == nil {
		return
	}
	p.once.Do(func() {
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// Stop stops mariadbd now and waits for it to exit (it is also stopped in
// t.Cleanup). The temp dir is kept until the cleanup.
func (s *Server) Stop() { s.stop() }

// PID returns mariadbd's process id (also its process group id).
func (s *Server) PID() int { return s.p.cmd.Process.Pid }

// Log returns mariadbd's error log so far.
func (s *Server) Log() string { return readFile(s.LogFile) }

// DSN returns a go-sql-driver/mysql data source name for User on addr (""
// means s.Addr): "app:app-password@tcp(127.0.0.1:PORT)/app".
func (s *Server) DSN(addr string) string {
	if addr == "" {
		addr = s.Addr
	}
	return fmt.Sprintf("%s:%s@tcp(%s)/%s", s.User, s.Password, addr, s.Database)
}

// MySQL runs the real mariadb (or mysql) client as User over TCP against
// addr ("host:port"; "" means s.Addr), so addr can be a tunnel listener
// forwarding to s: --protocol=TCP -h HOST -P PORT -u USER -pPASSWORD -D DB -N
// -B -e SQL. sql may hold several statements separated by ";". MySQL returns
// the client's stdout without the final newline: one line per row, columns
// separated by tabs. Any error fails the test, with the client's stderr.
func (s *Server) MySQL(t testing.TB, addr, sql string) string {
	t.Helper()
	out, err := s.TryMySQL(addr, sql)
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	return out
}

// TryMySQL is MySQL returning an error (including the client's stderr)
// instead of failing the test, for tests that expect the connection or query
// to fail. To try other credentials, call it on a copy of s with
// User/Password/Database changed.
func (s *Server) TryMySQL(addr, sql string) (string, error) {
	return s.TryMySQLArgs(addr, sql)
}

// TryMySQLArgs is TryMySQL with more client options (for example
// "--default-character-set=latin1"), given before -e.
func (s *Server) TryMySQLArgs(addr, sql string, extra ...string) (string, error) {
	if addr == "" {
		addr = s.Addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("mariadb client: bad address %q: %v", addr, err)
	}
	args := []string{
		"--no-defaults", // must be first
		"--protocol=TCP", "-h", host, "-P", port,
		"-u", s.User, "-p" + s.Password,
		"--connect-timeout=15",
	}
	if s.Database != "" {
		args = append(args, "-D", s.Database)
	}
	args = append(append(args, extra...), "-N", "-B", "-e", sql)
	return s.client("mariadb client to "+addr, args...)
}

// RootSQL runs sql as root over the unix socket and returns stdout like
// MySQL (root cannot log in over TCP).
func (s *Server) RootSQL(t testing.TB, sql string) string {
	t.Helper()
	out, err := s.rootSQL(sql)
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	return out
}

func (s *Server) rootSQL(sql string) (string, error) {
	return s.client("mariadb client (root, unix socket)",
		"--no-defaults", "--protocol=SOCKET", "-S", s.Socket, "-u", "root",
		"--connect-timeout=15", "-N", "-B", "-e", sql)
}

// client runs the client and returns its stdout without the final newline,
// or an error with its stderr.
func (s *Server) client(what string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.ClientPath, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %v\nstderr:\n%s", what, err, stderr.String())
	}
	return strings.TrimSuffix(stdout.String(), "\n"), nil
}

// run runs a setup program (mariadb-install-db) with its output in logFile.
func (s *Server) run(logFile string, timeout time.Duration, name string, args ...string) error {
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
	// The script runs the bootstrap mariadbd as a child; on timeout kill
	// the whole process group, not just the shell.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd.Run()
}

// cleanEnv is os.Environ without the variables the MariaDB client and
// server read (MYSQL_PWD, MYSQL_HOST, MYSQL_TCP_PORT, MYSQL_UNIX_PORT,
// MARIADB_*, ...), so the developer's shell cannot change what the tests do.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MYSQL") || strings.HasPrefix(kv, "MARIADB")
	})
}

// serverEnv is cleanEnv with TMPDIR set to s.TmpDir, for mariadb-install-db
// and mariadbd (nothing of theirs should touch the shared /tmp).
func (s *Server) serverEnv() []string {
	env := slices.DeleteFunc(cleanEnv(), func(kv string) bool { return strings.HasPrefix(kv, "TMPDIR=") })
	return append(env, "TMPDIR="+s.TmpDir)
}

// makeDir creates the server's temp dir and registers its removal.
// t.TempDir is not used: its long names could push the unix socket path over
// the 107-byte limit.
func makeDir(t testing.TB) string {
	t.Helper()
	parent := os.TempDir()
	if len(parent) > 60 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "mariadbtest-")
	if err != nil {
		t.Fatalf("mariadbtest: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("mariadbtest: removing %s: %v", dir, err)
		}
	})
	return dir
}

// findProgram returns the first of names found (MariaDB's names first, the
// MySQL-compatible names as fallback), or skips/fails the test.
func findProgram(t testing.TB, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := testenv.FindProgram(n); err == nil {
			return p
		}
	}
	testenv.Missing(t, "none of %s found in PATH or the sbin directories (Debian packages mariadb-server, mariadb-client)",
		strings.Join(names, ", "))
	return ""
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

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

// clearDir removes everything inside dir.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
