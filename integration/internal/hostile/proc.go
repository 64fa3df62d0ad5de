package hostile

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Alive returns nil when process pid runs, and an error saying why not
// (gone, or a zombie: exited but not yet reaped).
func Alive(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Errorf("process %d is gone: %w", pid, err)
	}
	// pid (comm) STATE ...; comm may contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return fmt.Errorf("process %d: unreadable stat %q", pid, s)
	}
	switch st := s[i+2]; st {
	case 'Z', 'X', 'x':
		return fmt.Errorf("process %d has exited (state %c)", pid, st)
	}
	return nil
}

// FDCount is the number of file descriptors process pid has open.
func FDCount(pid int) (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(es), nil
}

// Socket is a TCP socket in the LISTEN state or a UDP socket that a
// process holds: something a peer can send to.
type Socket struct {
	Proto string // "tcp" or "udp"
	Addr  netip.AddrPort
}

func (s Socket) String() string { return s.Proto + " " + s.Addr.String() }

// Sockets returns the listening TCP sockets and the UDP sockets of
// process pid, from /proc/PID/fd and /proc/PID/net/{tcp,tcp6,udp,udp6}.
func Sockets(pid int) ([]Socket, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, err
	}
	var out []Socket
	for _, t := range []struct{ file, proto string }{{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"}} {
		ents, err := readNet(fmt.Sprintf("/proc/%d/net/%s", pid, t.file))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !inodes[e.inode] {
				continue
			}
			if t.proto == "tcp" && e.state != "0A" { // LISTEN
				continue
			}
			out = append(out, Socket{Proto: t.proto, Addr: e.local})
		}
	}
	return out, nil
}

func socketInodes(pid int) (map[string]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range es {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if in, ok := strings.CutPrefix(l, "socket:["); ok {
			out[strings.TrimSuffix(in, "]")] = true
		}
	}
	return out, nil
}

type netEntry struct {
	local netip.AddrPort
	state string
	inode string
}

func readNet(path string) ([]netEntry, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil // no IPv6
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netEntry
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		ap, err := parseHexAddr(fs[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, netEntry{local: ap, state: fs[3], inode: fs[9]})
	}
	return out, sc.Err()
}

// parseHexAddr parses /proc/net's "0100007F:1F90": the address as 32-bit
// words in host (little-endian) order, the port big-endian.
func parseHexAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// FDKinds counts process pid's open descriptors by kind: "socket",
// "pipe", "anon_inode:[eventpoll]", or the file's path, to tell a leak's
// nature at a glance.
func FDKinds(pid int) (map[string]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, e := range es {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(l, "socket:"):
			l = "socket"
		case strings.HasPrefix(l, "pipe:"):
			l = "pipe"
		}
		out[l]++
	}
	return out, nil
}
