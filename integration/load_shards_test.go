package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/agentload"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
	"github.com/tunnelhq/tunnel/pkg/netguard"
)

// loadShardSize raises this process's soft open-file limit to the hard
// one (the shard processes inherit it) and returns it with the number of
// agents per shard: LOAD_SHARD_SIZE, by default 5,000 or what the limit
// allows at 3 descriptors per agent and 1,024 spare.
func loadShardSize(t *testing.T) (limit uint64, perShard int) {
	t.Helper()
	limit, err := netguard.RaiseFileLimit()
	if err != nil {
		t.Logf("raise the open-file limit: %v", err)
	}
	perShard = 5000
	if limit > 0 {
		perShard = min(perShard, (int(limit)-1024)/3)
	}
	if os.Getenv("LOAD_SHARD_SIZE") != "" {
		perShard = benchEnvInt(t, "LOAD_SHARD_SIZE", perShard)
	}
	if perShard < 1 {
		t.Fatalf("the open-file limit (%d) leaves no room for agents: raise it (ulimit -n)", limit)
	}
	return limit, perShard
}

// loadBuildShard builds agentload's shard command next to the other
// binaries.
func loadBuildShard(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "build", "-o", binDir+"/",
		"github.com/tunnelhq/tunnel/integration/internal/agentload/cmd/loadagents").CombinedOutput()
	if err != nil {
		t.Fatalf("build loadagents: %v\n%s", err, out)
	}
	return bin("loadagents")
}

// loadTokens creates a join token for each of n agents, load-00000 and
// on, 32 requests at a time.
func loadTokens(t *testing.T, admin *apiclient.Client, n int) []agentload.Agent {
	t.Helper()
	agents := make([]agentload.Agent, n)
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				name := loadAgentName(i)
				var tok api.Token
				if err := admin.Do(context.Background(), http.MethodPost, api.PathTokens, nil, api.CreateTokenRequest{Agent: name}, &tok); err != nil {
					errs <- fmt.Errorf("join token for %s: %w", name, err)
					continue
				}
				agents[i] = agentload.Agent{Index: i, Name: name, Token: tok.Token}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return agents
}

// loadStartShards starts the shard processes, perShard agents each, and
// feeds their events to tr; a shard that exits before the test stops it
// is reported to tr as a failure. Cleanup stops them (SIGTERM, then
// SIGKILL after a minute).
func loadStartShards(t *testing.T, shardBin string, gw *cluster, agents []agentload.Agent, perShard, enrolling int, tr *agentload.Tracker) []*exec.Cmd {
	t.Helper()
	var procs []*exec.Cmd
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for s := 0; s*perShard < len(agents); s++ {
		part := agents[s*perShard : min(len(agents), (s+1)*perShard)]
		dir := t.TempDir()
		var lines strings.Builder
		for _, a := range part {
			fmt.Fprintf(&lines, "%d\t%s\t%s\n", a.Index, a.Name, a.Token)
		}
		tokFile := filepath.Join(dir, "tokens")
		if err := os.WriteFile(tokFile, []byte(lines.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"--gateway", gw.addr, "--ca-pin", gw.pin, "--dir", filepath.Join(dir, "agents"),
			"--tokens", tokFile, "--enrolling", strconv.Itoa(enrolling)}
		if prof := os.Getenv("LOAD_PROFILE"); prof != "" {
			if err := os.MkdirAll(prof, 0o755); err != nil {
				t.Fatalf("LOAD_PROFILE: %v", err)
			}
			args = append(args, "--profile", filepath.Join(prof, fmt.Sprintf("agents-shard-%d", s)))
		}
		cmd := exec.Command(shardBin, args...)
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		in, err := cmd.StdinPipe() // held open: its end tells the shard the test is gone
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start shard %d: %v", s, err)
		}
		procs = append(procs, cmd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rerr := agentload.ReadEvents(out, tr)
			werr := cmd.Wait()
			in.Close()
			if !stopping.Load() {
				tr.Failed(-1, fmt.Errorf("shard process %d exited: %v (events: %v)\n%s", s, werr, rerr, stderr.String()))
			}
		}()
	}
	t.Cleanup(func() {
		stopping.Store(true)
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			for _, p := range procs {
				_ = p.Process.Kill()
			}
			<-done
		}
	})
	return procs
}

// loadShardsCPU returns the CPU time the shard processes used.
func loadShardsCPU(procs []*exec.Cmd) time.Duration {
	var d time.Duration
	for _, p := range procs {
		d += loadProcCPU(p.Process.Pid)
	}
	return d
}

// loadWaitAll waits until every agent connected in the tracker's current
// epoch; it fails at once if one stopped for good, a shard exited, or the
// gateway exited.
func loadWaitAll(t *testing.T, gw *cluster, admin *apiclient.Client, tr *agentload.Tracker, timeout time.Duration, what string) {
	t.Helper()
	n := tr.N()
	deadline := time.Now().Add(timeout)
	for tr.ConnectedNow() < n {
		if errs := tr.Errors(); len(errs) > 0 {
			t.Fatalf("%d agents stopped for good while waiting for all %s; first: %v", len(errs), what, errs[0])
		}
		select {
		case <-gw.done:
			t.Fatalf("the gateway exited while waiting for all agents %s: %v", what, gw.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			loadReportMissing(t, admin, tr)
			t.Fatalf("after %s only %d of %d agents %s; their warnings: %v", timeout, tr.ConnectedNow(), n, what, tr.Warnings())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadReportMissing logs, for the agents the tracker has not seen connect
// in its current epoch, what the gateway says of each (the admin API's
// online flag, since when, last seen) and how often each connected in
// all: whether they are disconnected, or connected without the event
// reaching the count.
func loadReportMissing(t *testing.T, admin *apiclient.Client, tr *agentload.Tracker) {
	t.Helper()
	idx, n := tr.Missing(50)
	var agents []api.Agent
	if err := admin.Do(context.Background(), http.MethodGet, api.PathAgents, nil, nil, &agents); err != nil {
		t.Logf("load: %d agents missing; the admin API cannot list agents: %v", n, err)
		return
	}
	byName := make(map[string]api.Agent, len(agents))
	for _, a := range agents {
		byName[a.Name] = a
	}
	online := 0
	for _, i := range idx {
		if byName[loadAgentName(i)].Online {
			online++
		}
	}
	t.Logf("load: %d agents missing from the count; of the first %d, the gateway lists %d online:", n, len(idx), online)
	for _, i := range idx {
		name := loadAgentName(i)
		a, ok := byName[name]
		if !ok {
			t.Logf("load:   %s: unknown to the gateway; %d connections in all", name, tr.ConnectionsOf(i))
			continue
		}
		t.Logf("load:   %s: online %v, connected since %s, last seen %s; %d connections in all",
			name, a.Online, loadTime(a.Since), loadTime(a.LastSeen), tr.ConnectionsOf(i))
	}
}

// loadAgentName is the name of simulated agent i.
func loadAgentName(i int) string { return fmt.Sprintf("load-%05d", i) }

func loadTime(at *time.Time) string {
	if at == nil {
		return "-"
	}
	return at.UTC().Format(time.RFC3339Nano)
}
