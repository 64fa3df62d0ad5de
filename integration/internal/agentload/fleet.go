// Package agentload runs many simulated agents, for load tests of a
// gateway. Each simulated agent is a real agent: [agent.Run] with its own
// data directory, its own join token, its own enrolled and sealed
// identity, and its own QUIC connection (its own UDP socket) to the
// gateway, over mutual TLS. Only the process is shared, so that thousands
// of agents fit on one test machine.
//
// A [Fleet] runs agents in this process and reports what they do to a
// [Reporter]: a [Tracker] (which counts connections per epoch, to time a
// reconnection) or, in a shard process (cmd/loadagents), an
// [EventWriter] whose lines the test reads back with [ReadEvents] into
// its Tracker. Shards exist because one process cannot hold the
// descriptors of 10,000 agents (a UDP socket and a data-directory lock
// each) under a common open-file hard limit of 20,000.
//
// Goroutines: one per agent (agent.Run and what it starts) and one that
// starts them, owned by the Fleet; [Fleet.Close] ends and waits for them
// all.
package agentload

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/agent"
)

// Agent is one simulated agent to run.
type Agent struct {
	Index int    // its index in the Reporter's numbering
	Name  string // the agent name its join token is for
	Token string // its join token
}

// Config says what to run.
type Config struct {
	// Gateway is the gateway's HOST:PORT and Pin its cluster CA pin.
	Gateway, Pin string
	// Dir holds one data directory per agent, named after it.
	Dir    string
	Agents []Agent
	// Enrolling bounds the agents that enrol and make their first
	// connection at once; zero means 16.
	Enrolling int
	Report    Reporter
}

// Fleet is a set of running simulated agents.
type Fleet struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start starts the agents in the background: at most cfg.Enrolling enrol
// and connect at once; the others wait for a slot, which an agent frees
// when it first connects or stops. Close the Fleet to stop them.
func Start(cfg Config) *Fleet {
	if cfg.Enrolling <= 0 {
		cfg.Enrolling = 16
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{cfg: cfg, ctx: ctx, cancel: cancel}
	log := slog.New(&warnHandler{r: cfg.Report})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		sem := make(chan struct{}, cfg.Enrolling)
		for _, a := range cfg.Agents {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.run(a, sem, log)
			}()
		}
	}()
	return f
}

// run runs one agent until the fleet closes; it frees its enrolment slot
// at its first connection or when it stops.
func (f *Fleet) run(a Agent, sem chan struct{}, log *slog.Logger) {
	var once sync.Once
	release := func() { once.Do(func() { <-sem }) }
	defer release()
	err := agent.Run(f.ctx, agent.Config{
		DataDir: filepath.Join(f.cfg.Dir, a.Name), Gateway: f.cfg.Gateway, Pin: f.cfg.Pin, Token: a.Token,
		Log: log,
		Connected: func(string) {
			f.cfg.Report.Connected(a.Index, time.Now())
			release()
		},
	})
	if f.ctx.Err() == nil {
		if err == nil {
			err = errors.New("agent.Run returned before the fleet closed")
		}
		f.cfg.Report.Failed(a.Index, err)
	}
}

// Close stops every agent and waits for them; safe to call twice.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
}
