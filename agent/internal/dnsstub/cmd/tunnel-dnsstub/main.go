// Command tunnel-dnsstub runs the agent's DNS stub alone, without an agent:
// for end-to-end tests (integration/dnsstub_test.go, which cannot import
// the agent's internal packages) and for trying the resolver setup of
// docs/DNS-STUB.md on a machine before the agent runs there.
//
//	tunnel-dnsstub --listen 127.0.0.153:53 --cluster prod --name orders-db=127.0.0.2
//
// It prints "dns stub ready udp=ADDR tcp=ADDR" on stdout once it answers,
// and stops on SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tunnelhq/tunnel/agent/internal/dnsstub"
)

type nameFlag map[string]netip.Addr

func (n nameFlag) String() string { return fmt.Sprint(map[string]netip.Addr(n)) }

func (n nameFlag) Set(v string) error {
	name, ip, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("--name %s: give NAME=IP, for example orders-db=127.0.0.2", v)
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("--name %s: %q is not an IP address: give NAME=IP, for example orders-db=127.0.0.2", v, ip)
	}
	n[name] = a
	return nil
}

func main() {
	names := nameFlag{}
	listen := flag.String("listen", dnsstub.Suggested, "loopback IP:PORT to answer on (UDP and TCP)")
	cluster := flag.String("cluster", "", "the cluster's name: answers NAME.CLUSTER.tunnel.")
	upstream := flag.String("upstream", "", "resolver IP[:PORT] for every other name (default: refuse them)")
	flag.Var(names, "name", "a listener, NAME=IP (repeatable)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := dnsstub.Start(dnsstub.Config{Listen: *listen, Cluster: *cluster, Names: names, Upstream: *upstream, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-dnsstub:", err)
		os.Exit(1)
	}
	udp, tcp := s.Addr()
	fmt.Printf("dns stub ready udp=%s tcp=%s\n", udp, tcp)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-dnsstub:", err)
		os.Exit(1)
	}
}
