// Package netns builds small Linux network topologies out of named network
// namespaces (`ip netns add`) and veth pairs, for benchmarks and tests that
// must not run over loopback: a namespace's links have a real MTU (1500 by
// default), so TCP is segmented the way it is between two hosts.
//
// Namespaces are created and wired with the `ip` command (iproute2).
// Processes and sockets are put into a namespace by this process itself:
// Do runs a function on an OS thread that has joined the namespace with
// setns(2), so a net.Listen, net.Dial or exec.Cmd.Start inside it creates
// its socket or child process there (a child inherits the namespace of the
// thread that forked it). Helpers that start processes and dial on their own
// (pgtest, sshdtest) therefore work unchanged inside Do. `ip netns exec` is
// not needed, and the pid of a started command is the command's own.
//
// Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN);
// ErrNotPermitted says so. Every namespace is deleted by Close/Delete, which
// also removes every interface inside it (the veth pairs and the bridge).
// Names carry the creating process's pid, so CleanStale can remove what a
// killed run left behind.
package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotPermitted is returned when namespaces cannot be created: the
// process is not root (it lacks CAP_NET_ADMIN/CAP_SYS_ADMIN).
var ErrNotPermitted = errors.New("cannot create network namespaces: this needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root (e.g. sudo -E) or use the loopback topology")

// ErrNoIP is returned when the `ip` command (iproute2) is not installed.
var ErrNoIP = errors.New("the `ip` command (iproute2) was not found; install it (Debian: apt-get install iproute2) or use the loopback topology")

// runDir is where `ip netns add` binds the namespaces.
const runDir = "/run/netns"

// NS is a named network namespace, /run/netns/NAME.
type NS struct {
	Name string
}

// ipBin returns the path of `ip` or ErrNoIP.
func ipBin() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNoIP
}

// ip runs `ip args...` and returns its output; a failure's error holds the
// output, and is ErrNotPermitted when the kernel refused for lack of
// privilege.
func ip(ctx context.Context, args ...string) (string, error) {
	bin, err := ipBin()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "Operation not permitted") || strings.Contains(msg, "Permission denied") {
			return string(out), fmt.Errorf("%w (ip %s: %s)", ErrNotPermitted, strings.Join(args, " "), msg)
		}
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// validName is what Add accepts: short, no path separators.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Add creates the namespace name (`ip netns add`) and brings its loopback
// up. It fails if the namespace exists.
func Add(ctx context.Context, name string) (*NS, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("netns: bad namespace name %q", name)
	}
	if _, err := os.Stat(filepath.Join(runDir, name)); err == nil {
		return nil, fmt.Errorf("netns: namespace %s already exists", name)
	}
	if _, err := ip(ctx, "netns", "add", name); err != nil {
		return nil, err
	}
	n := &NS{Name: name}
	if _, err := n.IP(ctx, "link", "set", "lo", "up"); err != nil {
		_ = n.Delete()
		return nil, err
	}
	return n, nil
}

// IP runs `ip -n NAME args...` (a command inside the namespace).
func (n *NS) IP(ctx context.Context, args ...string) (string, error) {
	return ip(ctx, append([]string{"-n", n.Name}, args...)...)
}

// Delete removes the namespace and with it every interface inside it (a
// veth's peer in another namespace goes too). Deleting a namespace that is
// already gone is not an error.
func (n *NS) Delete() error {
	if _, err := os.Stat(filepath.Join(runDir, n.Name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := ip(context.Background(), "netns", "del", n.Name)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(runDir, n.Name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// Exists reports whether the namespace is still bound in /run/netns.
func (n *NS) Exists() bool {
	_, err := os.Stat(filepath.Join(runDir, n.Name))
	return err == nil
}

// setns joins the calling thread to the network namespace open as f.
func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// doResult carries Do's outcome from the namespace thread.
type doResult struct {
	err      error
	panicked bool
	value    any
}

// Do runs f on an OS thread that has joined the namespace, and returns f's
// error. Sockets f creates (net.Listen, net.Dial) and processes it starts
// (exec.Cmd.Start) live in the namespace; goroutines f starts do not (they
// run on other threads), so f must create its sockets and processes
// itself. A panic in f is re-raised in the caller. Do blocks until f
// returns.
//
// If the thread cannot be returned to the process's own namespace it is
// left locked, so that it exits with its goroutine instead of being reused.
func (n *NS) Do(f func() error) error {
	ch := make(chan doResult, 1)
	go func() {
		runtime.LockOSThread()
		var r doResult
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- doResult{err: fmt.Errorf("netns: opening this thread's namespace: %w", err)}
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(runDir, n.Name))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- doResult{err: fmt.Errorf("netns: namespace %s: %w", n.Name, err)}
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			if errors.Is(err, syscall.EPERM) {
				err = fmt.Errorf("%w (setns: %v)", ErrNotPermitted, err)
			}
			ch <- doResult{err: fmt.Errorf("netns: entering %s: %w", n.Name, err)}
			return
		}
		func() {
			defer func() {
				if v := recover(); v != nil {
					r.panicked, r.value = true, v
				}
			}()
			r.err = f()
		}()
		if err := setns(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			r.err = errors.Join(r.err, fmt.Errorf("netns: leaving %s: %w", n.Name, err))
			ch <- r
			return
		}
		runtime.UnlockOSThread()
		ch <- r
	}()
	r := <-ch
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// Start starts cmd inside the namespace (cmd.Start on a thread in it).
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Dial connects to addr from inside the namespace.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

var mtuRE = regexp.MustCompile(`\bmtu ([0-9]+)\b`)

// MTU returns the MTU of the interface ifname in the namespace, as
// `ip -n NAME link show dev IFNAME` reports it.
func (n *NS) MTU(ctx context.Context, ifname string) (int, error) {
	out, err := n.IP(ctx, "-o", "link", "show", "dev", ifname)
	if err != nil {
		return 0, err
	}
	m := mtuRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("netns: no mtu in %q", strings.TrimSpace(out))
	}
	return strconv.Atoi(m[1])
}

// LinkBytes returns the bytes received and sent so far on the interface
// ifname in the namespace (`ip -n NAME -s -j link show dev IFNAME`).
func (n *NS) LinkBytes(ctx context.Context, ifname string) (rx, tx uint64, err error) {
	out, err := n.IP(ctx, "-s", "-j", "link", "show", "dev", ifname)
	if err != nil {
		return 0, 0, err
	}
	var links []struct {
		Stats64 struct {
			RX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
			TX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("netns: ip -s -j link show dev %s: %q (%v)", ifname, strings.TrimSpace(out), err)
	}
	return links[0].Stats64.RX.Bytes, links[0].Stats64.TX.Bytes, nil
}

// Prefix returns a namespace name prefix for kind ("bench", "test") that
// carries this process's pid: "tn-KIND-PID-". CleanStale recognises it.
func Prefix(kind string) string {
	return fmt.Sprintf("tn-%s-%d-", kind, os.Getpid())
}

var staleRE = regexp.MustCompile(`^tn-[a-z]+-([0-9]+)-`)

// CleanStale deletes the namespaces that Prefix-named runs left behind:
// those whose creating process no longer exists (a run killed with
// SIGKILL). It returns the names it deleted.
func CleanStale() ([]string, error) {
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, ent := range ents {
		m := staleRE.FindStringSubmatch(ent.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		if err := (&NS{Name: ent.Name()}).Delete(); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, ent.Name())
	}
	return deleted, errors.Join(errs...)
}
