// Command loadagents is a shard of simulated agents for load tests (see
// package agentload): it runs the agents listed in a tokens file, each a
// real agent.Run in this process, and writes their events (connected,
// failed, warned) to stdout as agentload event lines. It runs until
// SIGTERM or SIGINT, or until its stdin ends (the test that started it
// is gone), then stops every agent and exits.
//
//	loadagents --gateway HOST:PORT --ca-pin sha256:HEX --dir DIR --tokens FILE [--enrolling 16]
//
// The tokens file has one agent per line: INDEX<TAB>NAME<TAB>JOIN-TOKEN.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/tunnelhq/tunnel/integration/internal/agentload"
	"github.com/tunnelhq/tunnel/pkg/netguard"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadagents:", err)
		os.Exit(1)
	}
}

func run() error {
	gateway := flag.String("gateway", "", "the gateway's HOST:PORT")
	pin := flag.String("ca-pin", "", "the cluster CA pin")
	dir := flag.String("dir", "", "directory for the agents' data directories")
	tokens := flag.String("tokens", "", "file of INDEX<TAB>NAME<TAB>TOKEN lines")
	enrolling := flag.Int("enrolling", 16, "agents enrolling at once")
	flag.Parse()
	if *gateway == "" || *pin == "" || *dir == "" || *tokens == "" {
		return fmt.Errorf("give --gateway, --ca-pin, --dir and --tokens")
	}
	agents, err := readTokens(*tokens)
	if err != nil {
		return err
	}
	if _, err := netguard.RaiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "loadagents:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The end of stdin means the test is gone.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	f := agentload.Start(agentload.Config{Gateway: *gateway, Pin: *pin, Dir: *dir, Agents: agents,
		Enrolling: *enrolling, Report: agentload.NewEventWriter(os.Stdout)})
	<-ctx.Done()
	f.Close()
	return nil
}

func readTokens(path string) ([]agentload.Agent, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []agentload.Agent
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: bad line %q: want INDEX<TAB>NAME<TAB>TOKEN", path, sc.Text())
		}
		i, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("%s: bad index in %q", path, sc.Text())
		}
		out = append(out, agentload.Agent{Index: i, Name: f[1], Token: f[2]})
	}
	return out, sc.Err()
}
