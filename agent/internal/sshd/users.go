package sshd

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// osUser is a login's account on this host.
type osUser struct {
	Name     string
	UID, GID uint32
	Groups   []uint32
	Home     string
	Shell    string
	// Self is true when the login is the agent's own user, so its
	// processes need no change of credentials.
	Self bool
}

// osUsers looks up logins; a seam for tests.
type osUsers interface {
	lookup(login string) (*osUser, error)
}

// systemUsers looks logins up in the system's user database. When the agent
// runs as root, any existing login is valid; otherwise only its own.
type systemUsers struct{}

func (systemUsers) lookup(login string) (*osUser, error) {
	return lookupOSUser(login, os.Getuid())
}

func lookupOSUser(login string, selfUID int) (*osUser, error) {
	u, err := user.Lookup(login)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("login %q does not exist on this host", login)
		}
		return nil, fmt.Errorf("looking up login %q on this host: %w", login, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("login %q has a non-numeric uid or gid on this host", login)
	}
	if selfUID != 0 && uint64(selfUID) != uid {
		self := strconv.Itoa(selfUID)
		if su, err := user.LookupId(self); err == nil {
			self = su.Username
		}
		return nil, fmt.Errorf("the agent on this host runs as %q, not root, so it can only log in as %q, not as %q", self, self, login)
	}
	ou := &osUser{
		Name:  u.Username,
		UID:   uint32(uid),
		GID:   uint32(gid),
		Home:  u.HomeDir,
		Shell: loginShell(login),
		Self:  uint64(selfUID) == uid,
	}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				ou.Groups = append(ou.Groups, uint32(g))
			}
		}
	}
	if ou.Home == "" {
		ou.Home = "/"
	}
	return ou, nil
}

// loginShell returns login's shell from the passwd database, or /bin/sh.
func loginShell(login string) string {
	line := passwdLine("/etc/passwd", login)
	if line == "" {
		if out, err := exec.Command("getent", "passwd", login).Output(); err == nil {
			line = strings.TrimSpace(string(out))
		}
	}
	if f := strings.Split(line, ":"); len(f) == 7 && filepath.IsAbs(f[6]) {
		return f[6]
	}
	return "/bin/sh"
}

func passwdLine(path, login string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, _, ok := strings.Cut(sc.Text(), ":"); ok && name == login {
			return sc.Text()
		}
	}
	return ""
}

// credential is what the process runs as: nil for the agent's own user.
func (u *osUser) credential() *syscall.Credential {
	if u.Self && os.Getuid() != 0 {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
}

// sanePath is PATH for a login's processes: the sshd default.
func (u *osUser) sanePath() string {
	if u.UID == 0 {
		return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return "/usr/local/bin:/usr/bin:/bin:/usr/games"
}

// dir is where the login's processes start: home, or / when it is missing.
func (u *osUser) dir() string {
	if fi, err := os.Stat(u.Home); err == nil && fi.IsDir() {
		return u.Home
	}
	return "/"
}
