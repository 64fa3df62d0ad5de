package integration

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/agentload"
	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
)

// TestLoadAgents is issue 8's load test: LOAD_AGENTS (default 200)
// simulated agents connected to one real gateway (the tunnel-gateway
// binary on a real PostgreSQL), its memory and goroutines with all of
// them connected, and the time for all of them to reconnect after the
// gateway restarts, once after a clean stop (SIGTERM) and once after
// SIGKILL. Each simulated agent is a real agent (agent.Run, see
// integration/internal/agentload): its own join token from the admin API,
// its own enrolment, sealed identity, UDP socket and QUIC connection with
// mutual TLS. The agents run in shard processes (agentload's
// cmd/loadagents) of at most LOAD_SHARD_SIZE agents (default 5,000, fewer
// if the open-file limit asks: each agent holds about 3 descriptors),
// since one process cannot hold 10,000 agents' descriptors under a hard
// limit of 20,000. Issue 8's goal for 10,000 agents is < 3 GiB of gateway
// RSS and ≤ 60 s to reconnect all of them; the numbers are logged (and,
// from 10,000 agents up, compared with the goal), never asserted: the
// machine may be loaded. What is asserted: every agent enrols and
// connects, none stops for good, all reconnect after each restart within
// a generous deadline, the admin API lists them all online, and the
// gateway is alive at the end. The full run:
//
//	LOAD_AGENTS=10000 CI=1 go test -count=1 -run TestLoadAgents -timeout 60m -v ./integration/
//
// Knobs: LOAD_SETTLE (default 5 s, 30 s from 1,000 agents up) is how long
// the connected fleet idles before the gateway's memory and goroutines are
// read; LOAD_STORE_PARAMS adds parameters to the gateway's store URL (say
// pool_max_conns=16); LOAD_PROFILE=DIR saves a CPU profile of the
// gateway's first 20 s after each restart, and its goroutines 1, 2, 4 and
// 8 s after it. The gateway runs with --log-level info and with the
// per-source caps and anonymous rate limits lifted, since every simulated
// agent comes from 127.0.0.1 (real agents come from their own addresses).
func TestLoadAgents(t *testing.T) {
	n := benchEnvInt(t, "LOAD_AGENTS", 200)
	settle := 5 * time.Second
	if n >= 1000 {
		settle = 30 * time.Second
	}
	if s := os.Getenv("LOAD_SETTLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LOAD_SETTLE: %v", err)
		}
		settle = d
	}
	// Generous: about 60 ms per agent, at least 2 minutes (10 minutes
	// for 10,000).
	deadline := max(2*time.Minute, time.Duration(n)*60*time.Millisecond)
	limit, perShard := loadShardSize(t)
	shardBin := loadBuildShard(t)

	srv := pgtest.Start(t)
	url := srv.URL("")
	gw := initSharedGateways(t, url, 1)[0]
	runURL := url
	if extra := os.Getenv("LOAD_STORE_PARAMS"); extra != "" {
		runURL += "&" + extra
	}
	flags := []string{"--store", runURL, "--id", "gw-1", "--api-addr", "127.0.0.11:0", "--name", "127.0.0.11",
		"--log-level", "info", "--debug-addr", "127.0.0.11:0",
		"--login-burst", "1000000", "--login-rate", "1000000", "--max-conns-per-source", "1000000"}
	gw.start(flags...)
	flags = append(flags, "--api-addr", gw.addr) // restarts: the same address, which the agents know
	admin := loadAdminClient(t, gw)
	defer admin.Close()
	shards := (n + perShard - 1) / perShard
	t.Logf("load: %d agents in %d shard processes; machine: %s; open-file limit %d; gateway: %s; store parameters: %q",
		n, shards, loadMachine(), limit, loadProcLimits(gw.cmd.Process.Pid), os.Getenv("LOAD_STORE_PARAMS"))

	// 1. Join tokens, then enrol and connect.
	gwCPU, selfCPU, pgCPU := loadProcCPU(gw.cmd.Process.Pid), loadSelfCPU(), loadGroupCPU(srv.PID())
	start := time.Now()
	tokens := loadTokens(t, admin, n)
	tokenTime := time.Since(start)
	tr := agentload.NewTracker(n)
	enrolling := max(1, 32/shards)
	start = time.Now()
	procs := loadStartShards(t, shardBin, gw, tokens, perShard, enrolling, tr)
	loadWaitAll(t, gw, admin, tr, deadline, "enrolled and connected")
	enrolTime := time.Since(start)
	t.Logf("load: enrolment: %d join tokens from the admin API (32 requests at a time) in %s; %d agents enrolled and connected (%d at a time per shard) in %s (%.0f agents/s)",
		n, tokenTime.Round(time.Millisecond), n, enrolling, enrolTime.Round(time.Millisecond), float64(n)/enrolTime.Seconds())
	t.Logf("load: enrolment: CPU: gateway %s, PostgreSQL %s, agents (shard processes) %s, admin client (this process) %s",
		(loadProcCPU(gw.cmd.Process.Pid) - gwCPU).Round(10*time.Millisecond), (loadGroupCPU(srv.PID()) - pgCPU).Round(10*time.Millisecond),
		loadShardsCPU(procs).Round(10*time.Millisecond), (loadSelfCPU() - selfCPU).Round(10*time.Millisecond))
	loadWaitOnline(t, admin, n, deadline)
	loadLogWarnings(t, tr, "enrolment")

	// 2. Memory and goroutines, all connected and idle.
	time.Sleep(settle)
	st := loadGatewayStats(t, gw)
	var agentsRSS uint64
	for _, p := range procs {
		agentsRSS += loadProcStatus(t, p.Process.Pid).rss
	}
	t.Logf("load: gateway with %d agents connected (after %s idle): RSS %s, peak RSS %s, %d goroutines, %d threads; the agents' shard processes: RSS %s in all",
		n, settle, loadMiB(st.rss), loadMiB(st.hwm), st.goroutines, st.threads, loadMiB(agentsRSS))
	loadGoal(t, n, "gateway RSS < 3 GiB", st.rss < 3<<30, loadMiB(st.rss))

	// 3. Restart the gateway, cleanly then killed, and time the
	// reconnection of every agent.
	for _, kill := range []bool{false, true} {
		how := "clean stop (SIGTERM)"
		if kill {
			how = "SIGKILL"
		}
		tr.ResetWarnings()
		agentsCPU, pgCPU := loadShardsCPU(procs), loadGroupCPU(srv.PID())
		tr.NewEpoch()
		stopAt := time.Now()
		stopErr := loadStop(gw, kill)
		stopped := time.Since(stopAt)
		if !kill && stopErr != nil {
			t.Errorf("the gateway's clean stop: %v; want exit status 0", stopErr)
		}
		execAt := time.Now()
		gw.start(flags...)
		listening := time.Now()
		prof := loadProfile(t, gw, procs, kill)
		loadWaitAll(t, gw, admin, tr, deadline, "reconnected after the gateway's "+how)
		t.Logf("load: restart after %s: CPU from the stop to the last reconnection (%s): gateway %s, PostgreSQL %s, agents (shard processes) %s",
			how, time.Since(stopAt).Round(time.Millisecond), loadProcCPU(gw.cmd.Process.Pid).Round(10*time.Millisecond),
			(loadGroupCPU(srv.PID()) - pgCPU).Round(10*time.Millisecond), (loadShardsCPU(procs) - agentsCPU).Round(10*time.Millisecond))
		times := tr.ConnectTimes(listening)
		last := agentload.Percentile(times, 100)
		t.Logf("load: restart after %s: the gateway stopped in %s (exit: %v), started listening %s after its start; %d agents reconnected: p50 %s p90 %s p99 %s, all %s after it listened (%s after its start, %s after the stop began)",
			how, stopped.Round(time.Millisecond), loadExit(stopErr), listening.Sub(execAt).Round(time.Millisecond), len(times),
			agentload.Percentile(times, 50).Round(time.Millisecond), agentload.Percentile(times, 90).Round(time.Millisecond),
			agentload.Percentile(times, 99).Round(time.Millisecond), last.Round(time.Millisecond),
			(last + listening.Sub(execAt)).Round(time.Millisecond), (last + listening.Sub(stopAt)).Round(time.Millisecond))
		loadGoal(t, n, "all agents reconnected ≤ 60 s after the restart ("+how+")",
			last+listening.Sub(execAt) <= 60*time.Second, (last + listening.Sub(execAt)).Round(time.Millisecond).String())
		t.Logf("load: restart after %s: agents reconnected per second after the gateway listened: %s", how, loadHistogram(times))
		online := loadWaitOnline(t, admin, n, deadline)
		t.Logf("load: restart after %s: the admin API listed all %d agents online %s after the gateway listened (asked every 500 ms once every agent had reconnected)",
			how, n, online.Sub(listening).Round(time.Millisecond))
		loadLogWarnings(t, tr, "restart after "+how)
		prof()
		st := loadGatewayStats(t, gw)
		t.Logf("load: gateway after all %d reconnected (%s): RSS %s, peak RSS during the reconnection %s, %d goroutines, %d threads",
			n, how, loadMiB(st.rss), loadMiB(st.hwm), st.goroutines, st.threads)
		loadGoal(t, n, "gateway peak RSS < 3 GiB during the reconnection ("+how+")", st.hwm < 3<<30, loadMiB(st.hwm))
	}

	if errs := tr.Errors(); len(errs) > 0 {
		t.Fatalf("%d agents stopped for good; first: %v", len(errs), errs[0])
	}
	select {
	case <-gw.done:
		t.Fatalf("the gateway exited: %v", gw.waitErr)
	default:
	}
}

// loadWaitOnline waits until the admin API lists n agents online, asking
// every 500 ms, and returns when the request that said so was sent. It
// logs the earlier answers.
func loadWaitOnline(t *testing.T, admin *apiclient.Client, n int, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	var before []string
	start := time.Now()
	waitFor(t, timeout, fmt.Sprintf("%d agents online in the admin API", n), func() bool {
		var agents []api.Agent
		at = time.Now()
		if err := admin.Do(context.Background(), http.MethodGet, api.PathAgents, nil, nil, &agents); err != nil {
			t.Logf("list agents: %v", err)
			return false
		}
		online := 0
		for _, a := range agents {
			if a.Online {
				online++
			}
		}
		if online == n {
			return true
		}
		before = append(before, fmt.Sprintf("%d online at +%s (answered in %s)", online,
			at.Sub(start).Round(time.Millisecond), time.Since(at).Round(time.Millisecond)))
		time.Sleep(500 * time.Millisecond)
		return false
	})
	if len(before) > 0 {
		t.Logf("load: the admin API listed all %d agents online %s after it was first asked; before: %s",
			n, at.Sub(start).Round(time.Millisecond), strings.Join(before, ", "))
	}
	return at
}

// loadHistogram counts sorted durations per whole second: "2s:130 3s:1870"
// means 130 in [2 s, 3 s) and 1,870 in [3 s, 4 s); empty seconds are left
// out.
func loadHistogram(ds []time.Duration) string {
	var parts []string
	for i := 0; i < len(ds); {
		sec := ds[i] / time.Second
		j := i
		for j < len(ds) && ds[j]/time.Second == sec {
			j++
		}
		parts = append(parts, fmt.Sprintf("%ds:%d", sec, j-i))
		i = j
	}
	return strings.Join(parts, " ")
}

// loadStop stops the gateway, with SIGTERM (waiting up to 15 s before
// killing it, as cluster.stop) or SIGKILL, and returns its exit error.
func loadStop(c *cluster, kill bool) error {
	if !kill {
		return c.stop()
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	return c.waitErr
}

func loadExit(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// loadGoal logs whether issue 8's goal is met, from 10,000 agents up
// (the goal's size); smaller runs only report their numbers.
func loadGoal(t *testing.T, n int, goal string, met bool, value string) {
	t.Helper()
	if n < 10000 {
		return
	}
	verdict := "met"
	if !met {
		verdict = "NOT met"
	}
	t.Logf("load: goal %s: %s (%s)", goal, verdict, value)
}

// loadLogWarnings logs the agents' warnings since the last reset, by
// message, most frequent first.
func loadLogWarnings(t *testing.T, tr *agentload.Tracker, phase string) {
	t.Helper()
	w := tr.Warnings()
	if len(w) == 0 {
		t.Logf("load: agents' warnings during %s: none", phase)
		return
	}
	msgs := slices.SortedFunc(maps.Keys(w), func(a, b string) int { return w[b] - w[a] })
	var parts []string
	for _, m := range msgs {
		parts = append(parts, fmt.Sprintf("%d× %q", w[m], m))
	}
	t.Logf("load: agents' warnings during %s: %s", phase, strings.Join(parts, "; "))
}

// loadAdminClient logs the cluster's admin in and returns an API client
// with their certificate.
func loadAdminClient(t testing.TB, c *cluster) *apiclient.Client {
	t.Helper()
	a := c.adminUser()
	a.login()
	cert, err := profile.Dir{Path: a.home}.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := apiclient.New(apiclient.Config{Gateway: c.addr, Pin: c.pin, Cert: &cert})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
