package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Elevated logins: a role with sudo (tunnel admin roles add NAME --sudo)
// lets its login use sudo on the node for the length of an SSH session.
// The gateway says so in the session stream's header (Permit "sudo"); the
// node's SSH endpoint then puts a sudoers drop-in for that login in place
// while the session has a connection, and removes it when the last one
// ends. Drop-ins left by an agent that died are removed when it starts.

// DefaultSudoersDir is where the drop-ins go unless the agent file's
// sudoers_dir or TUNNEL_SUDOERS_DIR names another directory (tests use a
// temporary one).
const DefaultSudoersDir = "/etc/sudoers.d"

// sudoersPrefix starts the name of every drop-in the agent writes;
// sudoersMark starts its content, so that the agent never removes a file
// it did not write.
const (
	sudoersPrefix = "tunnel-"
	sudoersMark   = "# tunnel session "
)

// sudoLogin is what a login must look like to be written into sudoers: an
// OS user name, nothing sudoers would read as syntax.
var sudoLogin = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)

// sudoers manages the drop-ins of one agent. The zero value is not usable:
// see newSudoers.
type sudoers struct {
	dir    string
	visudo string // "" when visudo is not installed
	log    *slog.Logger

	mu   sync.Mutex
	held map[string]*sudoGrant // by session
}

type sudoGrant struct {
	login string
	path  string
	n     int // connections of the session holding it
}

// newSudoers returns the manager of drop-ins in dir (DefaultSudoersDir
// when ""), validating them with visudo when it is installed.
func newSudoers(dir string, log *slog.Logger) *sudoers {
	if dir == "" {
		dir = DefaultSudoersDir
	}
	s := &sudoers{dir: dir, log: log, held: map[string]*sudoGrant{}}
	for _, p := range []string{"visudo", "/usr/sbin/visudo", "/sbin/visudo"} {
		if v, err := exec.LookPath(p); err == nil {
			s.visudo = v
			break
		}
	}
	return s
}

// sessionFile is the drop-in's file name for a session: only letters,
// digits, '-' and '_' (sudo skips names with a dot or ending in '~').
func sessionFile(session string) string {
	var b strings.Builder
	for _, r := range session {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return sudoersPrefix + b.String()
}

// grant puts the drop-in of session in place for login (or counts one
// more connection of a session that has it) and returns its release,
// which removes it with the last connection. Safe to call release twice.
func (s *sudoers) grant(session, login string) (release func(), err error) {
	if !sudoLogin.MatchString(login) {
		return nil, fmt.Errorf("login %q cannot be given sudo", login)
	}
	if session == "" {
		return nil, errors.New("no session")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.held[session]
	switch {
	case g != nil && g.login != login:
		return nil, fmt.Errorf("session %s already holds sudo for login %s", session, g.login)
	case g == nil:
		path := filepath.Join(s.dir, sessionFile(session))
		if err := s.write(path, session, login); err != nil {
			return nil, err
		}
		g = &sudoGrant{login: login, path: path}
		s.held[session] = g
		s.log.Info("sudo granted for the session", "session", session, "login", login, "file", path)
	}
	g.n++
	var once sync.Once
	return func() { once.Do(func() { s.release(session) }) }, nil
}

func (s *sudoers) release(session string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.held[session]
	if g == nil {
		return
	}
	if g.n--; g.n > 0 {
		return
	}
	delete(s.held, session)
	if err := os.Remove(g.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("remove the sudoers drop-in of an ended session", "session", session, "file", g.path, "err", err)
		return
	}
	s.log.Info("sudo taken back at the end of the session", "session", session, "login", g.login)
}

// write writes the drop-in atomically: a hidden temporary file (sudo
// skips names with a dot), mode 0440, checked with visudo -cf when
// installed, then renamed into place.
func (s *sudoers) write(path, session, login string) error {
	content := fmt.Sprintf("%s%s: sudo for %s while the session lasts; removed at its end\n%s ALL=(ALL:ALL) NOPASSWD: ALL\n",
		sudoersMark, session, login, login)
	tmp, err := os.CreateTemp(s.dir, ".tunnel-*.tmp")
	if err != nil {
		return fmt.Errorf("sudoers drop-in: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return fmt.Errorf("sudoers drop-in: %w", err)
	}
	if err := tmp.Chmod(0o440); err != nil {
		tmp.Close()
		return fmt.Errorf("sudoers drop-in: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sudoers drop-in: %w", err)
	}
	if s.visudo != "" {
		out, err := exec.Command(s.visudo, "-cf", tmp.Name()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sudoers drop-in refused by visudo: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("sudoers drop-in: %w", err)
	}
	return nil
}

// cleanStale removes the drop-ins an earlier run of the agent left behind
// (it died with sessions open): files named tunnel-* whose content starts
// with the agent's mark, and its temporary files. It returns how many it
// removed.
func (s *sudoers) cleanStale() int {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("read the sudoers directory to clean stale drop-ins", "dir", s.dir, "err", err)
		}
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, sudoersPrefix) && !strings.HasPrefix(name, ".tunnel-") {
			continue
		}
		path := filepath.Join(s.dir, name)
		if strings.HasPrefix(name, sudoersPrefix) {
			data, err := os.ReadFile(path)
			if err != nil || !bytes.HasPrefix(data, []byte(sudoersMark)) {
				continue // not ours
			}
		}
		held := false
		for _, g := range s.held {
			held = held || g.path == path
		}
		if held {
			continue
		}
		if err := os.Remove(path); err == nil {
			n++
		}
	}
	if n > 0 {
		s.log.Info("removed stale sudoers drop-ins of sessions that ended while the agent was down", "count", n, "dir", s.dir)
	}
	return n
}
