package sshd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"
	"github.com/pkg/sftp"
)

// killGrace is how long a program has between SIGHUP and SIGKILL, and
// drainGrace how long its output may go on after it exits (a background
// process may keep the terminal or a pipe open).
const (
	killGrace  = time.Second
	drainGrace = 2 * time.Second
)

// runShell runs the login's shell: interactive when cmdline is empty,
// with -c cmdline otherwise; with a PTY if one was requested.
func (s *session) runShell(cmdline string) error {
	u := s.g.user
	shell := u.Shell
	args := []string{"-" + filepath.Base(shell)} // a login shell
	if cmdline != "" {
		args = []string{filepath.Base(shell), "-c", cmdline}
	}
	if err := s.startRecording(); err != nil {
		fmt.Fprintf(s.ch.Stderr(), "tunnel: session recording is unavailable, so the session cannot start: %v\r\n", err)
		return errStartFailed
	}
	defer s.stopRecording()
	cmd := s.command(shell, args)
	s.mu.Lock()
	p := s.pty
	s.mu.Unlock()
	if p != nil {
		return s.runPTY(cmd, p)
	}
	return s.runPipes(cmd)
}

// errStartFailed ends a session whose program could not start (exit 255).
var errStartFailed = errors.New("program did not start")

func (s *session) command(path string, args []string) *exec.Cmd {
	u := s.g.user
	cmd := &exec.Cmd{Path: path, Args: args, Dir: u.dir(), Env: s.environ()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: u.credential()}
	return cmd
}

// environ is the program's environment: what the client may set, then what
// the server sets (which wins).
func (s *session) environ() []string {
	u := s.g.user
	env := append([]string(nil), s.env...)
	env = append(env,
		"HOME="+u.Home,
		"USER="+u.Name,
		"LOGNAME="+u.Name,
		"SHELL="+u.Shell,
		"PATH="+u.sanePath(),
		"TUNNEL_SESSION_ID="+s.g.sess.ID,
		"TUNNEL_USER="+s.g.sess.User,
	)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pty != nil && s.pty.Term != "" {
		env = append(env, "TERM="+s.pty.Term)
	}
	if s.agentSock != "" {
		env = append(env, "SSH_AUTH_SOCK="+s.agentSock)
	}
	return env
}

// runPipes runs cmd with its stdin, stdout and stderr on the channel.
func (s *session) runPipes(cmd *exec.Cmd) error {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(s.ch.Stderr(), "tunnel: cannot start %s: %v\n", cmd.Path, err)
		return errStartFailed
	}
	s.setProc(cmd.Process)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.copyIn(stdin, s.ch)
		_ = stdin.Close()
	}()
	outDone := make(chan struct{})
	errDone := make(chan struct{})
	go func() { defer close(outDone); s.copyOut(s.ch, stdout) }()
	go func() { defer close(errDone); s.copyOut(s.ch.Stderr(), stderr) }()
	drained := make(chan struct{})
	go func() { <-outDone; <-errDone; close(drained) }()
	waited := make(chan error, 1)
	go func() { <-drained; waited <- cmd.Wait() }()
	return s.wait(cmd.Process, waited, func() {
		_ = stdout.(io.Closer).Close()
		_ = stderr.(io.Closer).Close()
	})
}

// wait waits for the program (waited yields its exit); when the session
// ends first, it sends SIGHUP to the program's process group, SIGKILL
// after killGrace, and then calls unblock so its output copiers end.
func (s *session) wait(p *os.Process, waited <-chan error, unblock func()) error {
	select {
	case err := <-waited:
		return err
	case <-s.ctx.Done():
	}
	_ = syscall.Kill(-p.Pid, syscall.SIGHUP)
	_ = syscall.Kill(-p.Pid, syscall.SIGCONT)
	t := time.NewTimer(killGrace)
	defer t.Stop()
	select {
	case err := <-waited:
		return err
	case <-t.C:
	}
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	t.Reset(drainGrace)
	select {
	case err := <-waited:
		return err
	case <-t.C:
	}
	unblock()
	return <-waited
}

// runPTY runs cmd on a new terminal whose master is copied to and from the
// channel.
func (s *session) runPTY(cmd *exec.Cmd, p *ptyRequest) error {
	ptmx, tty, err := openPTY()
	if err != nil {
		fmt.Fprintf(s.ch.Stderr(), "tunnel: cannot allocate a terminal: %v\r\n", err)
		return errStartFailed
	}
	defer ptmx.Close()
	if cred := cmd.SysProcAttr.Credential; cred != nil {
		// As sshd does: the terminal belongs to the login.
		_ = tty.Chown(int(cred.Uid), int(cred.Gid))
		_ = tty.Chmod(0o620)
	}
	_ = setWinsize(ptmx, p.Columns, p.Rows, p.Width, p.Height)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.Env = append(cmd.Env, "SSH_TTY="+tty.Name())
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	err = cmd.Start()
	_ = tty.Close()
	if err != nil {
		fmt.Fprintf(s.ch.Stderr(), "tunnel: cannot start %s: %v\r\n", cmd.Path, err)
		return errStartFailed
	}
	s.setProc(cmd.Process)
	s.mu.Lock()
	s.ptmx = ptmx
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.copyIn(ptmx, s.ch)
	}()
	outDone := make(chan struct{})
	go func() { defer close(outDone); s.copyOut(s.ch, ptmx) }()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	err = s.wait(cmd.Process, waited, func() {})
	// The terminal's output ends (EIO) once every process holding it has
	// exited; give it a moment, then cut it.
	t := time.NewTimer(drainGrace)
	select {
	case <-outDone:
	case <-t.C:
	}
	t.Stop()
	s.mu.Lock()
	s.ptmx = nil
	s.mu.Unlock()
	_ = ptmx.Close()
	<-outDone
	return err
}

// openPTY opens a terminal pair whose master is non-blocking, so that
// closing it ends a pending read.
func openPTY() (ptmx, tty *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	fd, err := syscall.Dup(int(m.Fd()))
	_ = m.Close()
	if err != nil {
		_ = t.Close()
		return nil, nil, err
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		_ = t.Close()
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), t, nil
}

// setWinsize sets a terminal's size without File.Fd, which would make the
// file blocking again.
func setWinsize(f *os.File, cols, rows, width, height uint32) error {
	ws := struct{ Rows, Cols, X, Y uint16 }{uint16(rows), uint16(cols), uint16(width), uint16(height)}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// resize applies a window change to the terminal and the recording.
func (s *session) resize(w windowChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pty == nil {
		return
	}
	s.pty.Columns, s.pty.Rows, s.pty.Width, s.pty.Height = w.Columns, w.Rows, w.Width, w.Height
	if s.ptmx != nil {
		_ = setWinsize(s.ptmx, w.Columns, w.Rows, w.Width, w.Height)
	}
	s.rec.resize(int(w.Columns), int(w.Rows))
}

func (s *session) setProc(p *os.Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc = p
}

// signal delivers a client's signal request to the program.
func (s *session) signal(name string) {
	sig, ok := signalsByName[name]
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if ok && p != nil {
		_ = p.Signal(sig)
	}
}

var signalsByName = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// exitStatus turns a program's end into an exit status, or a signal name
// (RFC 4254 6.10) when a signal killed it.
func exitStatus(err error) (status uint32, signal string) {
	if err == nil {
		return 0, ""
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 255, ""
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok {
		return uint32(ee.ExitCode()) & 0xff, ""
	}
	if ws.Signaled() {
		for name, sig := range signalsByName {
			if sig == ws.Signal() {
				return 0, name
			}
		}
		return 128 + uint32(ws.Signal()), ""
	}
	return uint32(ws.ExitStatus()), ""
}

// runSFTP serves the sftp subsystem: in-process (pkg/sftp) when the login
// is the agent's own user, otherwise with Config.SFTPCommand (or OpenSSH's
// sftp-server) run as the login.
func (s *session) runSFTP() error {
	if s.g.user.Self {
		srv, err := sftp.NewServer(channelIO{s}, sftp.WithServerWorkingDirectory(s.g.user.dir()))
		if err != nil {
			return err
		}
		err = srv.Serve()
		_ = srv.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return err
	}
	argv := s.c.srv.cfg.SFTPCommand
	if len(argv) == 0 {
		argv = findSFTPServer()
	}
	if len(argv) == 0 {
		fmt.Fprintf(s.ch.Stderr(), "tunnel: sftp is not available for login %q on this host\n", s.g.user.Name)
		return errStartFailed
	}
	return s.runPipes(s.command(argv[0], argv))
}

func findSFTPServer() []string {
	for _, p := range []string{
		"/usr/lib/openssh/sftp-server",
		"/usr/libexec/openssh/sftp-server",
		"/usr/libexec/sftp-server",
		"/usr/lib/ssh/sftp-server",
	} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return []string{p}
		}
	}
	return nil
}

// channelIO is the channel as the sftp server's transport; its traffic
// counts as activity, and closing it is left to the session.
type channelIO struct{ s *session }

func (c channelIO) Read(p []byte) (int, error) {
	n, err := c.s.ch.Read(p)
	if n > 0 {
		c.s.c.touch()
	}
	return n, err
}

func (c channelIO) Write(p []byte) (int, error) {
	c.s.c.touch()
	return c.s.ch.Write(p)
}

func (channelIO) Close() error { return nil }

// SFTPMain serves sftp on standard input and output until the client
// leaves. An agent binary can offer it as a hidden subcommand and name
// that in Config.SFTPCommand.
func SFTPMain() error {
	srv, err := sftp.NewServer(stdio{})
	if err != nil {
		return err
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sftp server: %w", err)
	}
	return nil
}

type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { return nil }
