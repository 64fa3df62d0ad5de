package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// listenError says, in one sentence a person can act on, why the listener
// set by flag could not bind addr on network ("TCP" or "UDP"). The cause
// stays wrapped (errors.Is(err, syscall.EADDRINUSE) holds).
func listenError(flag, network, addr string, err error) error {
	var ae *net.AddrError
	var ue net.UnknownNetworkError
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s %s: the address is already in use on %s (another gateway, or tunnel-gateway dev, running?): stop it, or choose another address: %w", flag, addr, network, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s %s: this machine has no such address: give one of its own, or 0.0.0.0 for all: %w", flag, addr, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: permission denied on %s (a port below 1024 needs root or CAP_NET_BIND_SERVICE): %w", flag, addr, network, err)
	case errors.As(err, &ae), errors.As(err, &ue):
		return fmt.Errorf("%s %q: want HOST:PORT, for example 127.0.0.1:8443 or :8443: %w", flag, addr, err)
	}
	return fmt.Errorf("%s %s: listen on %s: %w", flag, addr, network, err)
}

// CheckListen binds the addresses cfg listens on first (the API on TCP,
// QUIC on UDP, the SSH jump host) and releases them at once. A command
// that must not act for a gateway that cannot start (tunnel-gateway dev
// creates a cluster and prints its admin's password) asks it first; the
// addresses can still be taken before New binds them, which then fails
// with the same sentence.
func CheckListen(cfg Config) error {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	api := cfg.APIAddr
	if api == "" {
		api = ":8443"
	}
	ln, err := net.Listen("tcp", api)
	if err != nil {
		return listenError("--api-addr", "TCP", api, err)
	}
	closers = append(closers, ln.Close)
	quicFlag, quic := "--quic-addr", cfg.QUICAddr
	if quic == "" {
		host, port, _ := net.SplitHostPort(api)
		if port == "0" {
			port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		}
		quicFlag, quic = "--api-addr", net.JoinHostPort(host, port)
	}
	pc, err := net.ListenPacket("udp", quic)
	if err != nil {
		return listenError(quicFlag, "UDP", quic, err)
	}
	closers = append(closers, pc.Close)
	if cfg.SSHAddr != "" {
		ln, err := net.Listen("tcp", cfg.SSHAddr)
		if err != nil {
			return listenError("--ssh-addr", "TCP", cfg.SSHAddr, err)
		}
		closers = append(closers, ln.Close)
	}
	return nil
}
