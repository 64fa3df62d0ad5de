// Command loadagents is a shard of simulated agents for load tests (see
// package agentload): it runs the agents listed in a tokens file, each a
// real agent.Run in this process, and writes their events (connected,
// failed, warned) to stdout as agentload event lines. It runs until
// SIGTERM or SIGINT, or until its stdin ends (the test that started it
// is gone), then stops every agent and exits.
//
//	loadagents --gateway HOST:PORT --ca-pin sha256:HEX --dir DIR --tokens FILE [--enrolling 16] [--profile PREFIX]
//
// With --profile, SIGUSR1 starts a CPU profile of the shard written to
// PREFIX-1.pprof (then -2, -3, ...), and the next SIGUSR1 ends it (the load test profiles the agents'
// side of a reconnection this way).
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
	"runtime/pprof"
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
	profile := flag.String("profile", "", "on SIGUSR1, write a CPU profile to PREFIX-N.pprof until the next SIGUSR1")
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
	if *profile != "" {
		done := profileOnSignal(ctx, *profile)
		defer done()
	}
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

// profileOnSignal starts a CPU profile into prefix-N.pprof at a SIGUSR1 and ends it
// at the next one (or when ctx ends); the function it returns waits for
// that.
func profileOnSignal(ctx context.Context, prefix string) func() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(sig)
		var fh *os.File
		n := 0
		stop := func() {
			if fh != nil {
				pprof.StopCPUProfile()
				fh.Close()
				fh = nil
			}
		}
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
			}
			if fh != nil {
				stop()
				continue
			}
			n++
			var err error
			if fh, err = os.Create(fmt.Sprintf("%s-%d.pprof", prefix, n)); err != nil {
				fmt.Fprintln(os.Stderr, "loadagents: profile:", err)
				continue
			}
			if err := pprof.StartCPUProfile(fh); err != nil {
				fmt.Fprintln(os.Stderr, "loadagents: profile:", err)
				fh.Close()
				fh = nil
			}
		}
	}()
	return func() { <-done }
}
