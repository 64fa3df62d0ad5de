package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/netns"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// TestNetnsLAN checks the topology tunnel-bench's `--topology netns` runs
// on (integration/internal/netns): two namespaces on a LAN of veth pairs
// and a bridge at MTU 1500, reached from this process with setns. It
// checks the MTU `ip -n NS link show` reports, that 8 MiB cross from one
// namespace to the other intact over TCP, that the path MTU is really 1500
// (a TCP segment carries at most 1448 bytes of payload with timestamps:
// the kernel's TCP_MAXSEG on the client socket), that the namespaces are
// isolated from this process's loopback, and that Close removes every
// namespace. Needs root: skipped without it, failed under CI=1.
func TestNetnsLAN(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "network namespaces need root (CAP_NET_ADMIN); run as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := netns.CleanStale(); err != nil {
		t.Logf("cleaning stale namespaces: %v", err)
	}
	prefix := netns.Prefix("test")
	lan, err := netns.NewLAN(ctx, prefix, netip.MustParsePrefix("10.99.0.0/24"), 1500, "cli", "srv")
	if errors.Is(err, netns.ErrNotPermitted) || errors.Is(err, netns.ErrNoIP) {
		testenv.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lan.Close() })
	cli, srv := lan.Host("cli"), lan.Host("srv")
	if cli == nil || srv == nil || cli.Addr.String() != "10.99.0.1" || srv.Addr.String() != "10.99.0.2" {
		t.Fatalf("hosts: %+v", lan.Hosts)
	}

	// The MTU, as ip reports it, on both hosts' interfaces.
	for _, h := range lan.Hosts {
		mtu, err := h.MTU(ctx, netns.HostIface)
		if err != nil {
			t.Fatal(err)
		}
		if mtu != 1500 {
			t.Errorf("%s: %s mtu %d, want 1500", h.Name, netns.HostIface, mtu)
		}
		out, err := h.IP(ctx, "-o", "link", "show", "dev", netns.HostIface)
		if err != nil || !strings.Contains(out, "mtu 1500") {
			t.Errorf("ip -n %s link show dev eth0: %q, %v", h.Name, out, err)
		}
	}

	// A listener in srv on its LAN address; nothing listens there in this
	// process's namespace.
	ln, err := srv.Listen("tcp", net.JoinHostPort(srv.Addr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("dialled %s from the host namespace: the namespaces are not isolated", addr)
	}

	payload := make([]byte, 8<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(payload)
	type recv struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan recv, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- recv{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r recv
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		if err == nil {
			_, r.err = c.Write([]byte("ok"))
		}
		got <- r
	}()

	c, err := cli.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	mss, err := tcpMaxSeg(c)
	if err != nil {
		t.Fatal(err)
	}
	// 1500 - 20 (IP) - 20 (TCP) = 1460; with TCP timestamps 1448. On
	// loopback (MTU 65536) it would be far larger.
	if mss < 1400 || mss > 1460 {
		t.Errorf("TCP_MAXSEG = %d, want 1448 or 1460 for MTU 1500", mss)
	}
	if _, err := io.Copy(c, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 2)
	if _, err := io.ReadFull(c, ack); err != nil || string(ack) != "ok" {
		t.Fatalf("reading the receiver's ack: %q, %v", ack, err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != int64(len(payload)) || r.sum != want {
		t.Fatalf("received %d bytes, sha256 %x; sent %d, sha256 %x", r.n, r.sum, len(payload), want)
	}
	c.Close()
	ln.Close()

	// Close removes every namespace (and with them the veths and bridge).
	names := lan.Namespaces()
	if len(names) != 3 {
		t.Fatalf("namespaces: %d, want 3 (switch, cli, srv)", len(names))
	}
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lan.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n.Name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists after Close (%v)", n.Name, err)
		}
	}
	if err := cli.Do(func() error { return nil }); err == nil {
		t.Errorf("Do in a deleted namespace succeeded")
	}
}

// tcpMaxSeg returns the connection's TCP_MAXSEG (the MSS in use).
func tcpMaxSeg(c net.Conn) (int, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, fmt.Errorf("%T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var mss int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		mss, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG)
	}); err != nil {
		return 0, err
	}
	return mss, serr
}
