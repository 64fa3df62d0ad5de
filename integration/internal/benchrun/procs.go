package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// env is what every part of a run shares: a temp dir, a log, and the stack
// of cleanups (processes to stop, dirs to remove) run in reverse order when
// the harness exits, also after SIGINT.
type env struct {
	tmp string
	log io.Writer

	mu       sync.Mutex
	cleanups []namedCleanup
}

type namedCleanup struct {
	name string
	f    func()
}

func (e *env) addCleanup(name string, f func()) {
	e.mu.Lock()
	e.cleanups = append(e.cleanups, namedCleanup{name, f})
	e.mu.Unlock()
}

// cleanup runs every registered cleanup, newest first. Each runs once.
func (e *env) cleanup() {
	for {
		e.mu.Lock()
		n := len(e.cleanups)
		if n == 0 {
			e.mu.Unlock()
			return
		}
		c := e.cleanups[n-1]
		e.cleanups = e.cleanups[:n-1]
		e.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					fmt.Fprintf(e.log, "cleanup %s: %v\n", c.name, r)
				}
			}()
			c.f()
		}()
	}
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "tunnel-bench: "+format+"\n", args...)
}

// mkdir makes a new directory under the run's temp dir.
func (e *env) mkdir(prefix string) (string, error) {
	return os.MkdirTemp(e.tmp, prefix+"-")
}

// service is a long-running child process (a server or a forwarder) in its
// own process group, with its output in a log file.
type service struct {
	name    string
	cmd     *exec.Cmd
	logFile string
	done    chan struct{}
	err     error
	once    sync.Once
}

// startService starts cmd in its own process group with stdout and stderr
// appended to logFile and registers its stop with e. The caller may set
// cmd.Dir and cmd.Env before.
func (e *env) startService(name string, cmd *exec.Cmd, logFile string) (*service, error) {
	return e.startServiceOn(nil, name, cmd, logFile)
}

// startServiceOn is startService on host h (nil: the harness's own
// namespace).
func (e *env) startServiceOn(h *host, name string, cmd *exec.Cmd, logFile string) (*service, error) {
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// A safety net if the harness itself is killed with SIGKILL.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	start := cmd.Start
	if h != nil {
		start = func() error { return h.start(cmd) }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &service{name: name, cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	e.addCleanup(name, s.stop)
	return s, nil
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// exited returns an error if the process has exited.
func (s *service) exited() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited: %v\n%s", s.name, s.err, s.tail())
	default:
		return nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 5 s, and waits
// for the process. Idempotent.
func (s *service) stop() {
	s.once.Do(func() {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
		// Anything left in the group (a forked child) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// tail returns the last lines of the service's log.
func (s *service) tail() string { return tailFile(s.logFile, 30) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every 20-200 ms until it returns nil, the service (if
// any) exits, ctx is done or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, s *service, cond func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 20 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if s != nil {
			if xerr := s.exited(); xerr != nil {
				return xerr
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// freePort returns a loopback port free on both TCP and UDP (the gateway
// serves both on its API port; an agent's UDP socket may hold a port whose
// TCP side is free).
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no loopback port free on both TCP and UDP")
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// procStat is one /proc/PID/stat line's fields after the command name.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	// Fields from 3 (state) on.
	return strings.Fields(s[i+1:]), nil
}

// descendants returns the pids of every live descendant of pid (not pid
// itself), found by scanning /proc for parent pids.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		f, err := procStat(p)
		if err != nil || len(f) < 2 {
			continue
		}
		pp, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		children[pp] = append(children[pp], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// findProcess returns the pid of the first process whose command line
// contains every one of parts, or 0.
func findProcess(parts ...string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		ok := true
		for _, part := range parts {
			if !strings.Contains(cl, part) {
				ok = false
				break
			}
		}
		if ok {
			return p
		}
	}
	return 0
}

// runOut runs a short command and returns its combined output.
func runOut(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
