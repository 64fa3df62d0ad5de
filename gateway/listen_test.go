package gateway

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

// CheckListen names the flag, the address and what to do, and keeps the
// cause.
func TestCheckListen(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" means no error
		is   error
	}{
		{"free", Config{APIAddr: "127.0.0.1:0", SSHAddr: "127.0.0.1:0"}, "", nil},
		{"API taken on TCP", Config{APIAddr: tcp.Addr().String()},
			"--api-addr " + tcp.Addr().String() + ": the address is already in use on TCP", syscall.EADDRINUSE},
		{"QUIC taken on UDP", Config{APIAddr: "127.0.0.1:0", QUICAddr: udp.LocalAddr().String()},
			"--quic-addr " + udp.LocalAddr().String() + ": the address is already in use on UDP", syscall.EADDRINUSE},
		{"jump host taken", Config{APIAddr: "127.0.0.1:0", SSHAddr: tcp.Addr().String()},
			"--ssh-addr " + tcp.Addr().String() + ": the address is already in use on TCP", syscall.EADDRINUSE},
		{"no port", Config{APIAddr: "bogus"}, `--api-addr "bogus": want HOST:PORT`, nil},
		{"not this machine's", Config{APIAddr: "192.0.2.1:8443"}, "--api-addr 192.0.2.1:8443: this machine has no such address", syscall.EADDRNOTAVAIL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckListen(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckListen = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("CheckListen = %v; want %q...", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("CheckListen = %v; want it to wrap %v", err, tc.is)
			}
		})
	}
	// What it bound, it released.
	if err := CheckListen(Config{APIAddr: freeAddr}); err != nil {
		t.Fatalf("CheckListen(%s) = %v", freeAddr, err)
	}
	if ln, err := net.Listen("tcp", freeAddr); err != nil {
		t.Errorf("CheckListen kept %s: %v", freeAddr, err)
	} else {
		ln.Close()
	}
}
