package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/agent"
	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/pkg/api"
)

// BenchmarkRevokeFanout measures issue 8's fan-out target: three real
// gateways on one real PostgreSQL (as TestMultiGateway); each iteration
// a new user logs in, holds a `tunnel proxy db` stream relayed by gateway
// 2, an admin locks them on gateway 3, and the clock runs until the stream's last
// byte (the read returns EOF or reset). Reports p50, p99 and max in ms,
// from the start of the lock command (a CLI process) and from its return
// (the store commit). Creating the user, the login and the proxy start
// are outside the timer. Run:
//
//	CI=1 go test -run '^$' -bench BenchmarkRevokeFanout -benchtime 100x ./integration/
func BenchmarkRevokeFanout(b *testing.B) {
	srv := pgtest.Start(b)
	gws := startSharedGateways(b, srv.URL(""), 3, "--heartbeat-interval", "1s", "--reconcile-interval", "5s",
		"--login-burst", "100000", "--login-rate", "100000")
	c1, c2, c3 := gws[0], gws[1], gws[2]
	admin1 := c1.adminUser()
	admin1.login()
	admin1.must("admin", "roles", "add", "ops", "--login", "ops", "--service", "web-1/echo", "--max-ttl", "2h")
	echo := serve(b, echoHandler)
	c2.startAgentAt("web-1", filepath.Join(b.TempDir(), "agent"), c2.addr, admin1.token("web-1"),
		"expose:\n  - {name: echo, address: "+echo.addr()+"}\n")
	admin3 := c3.newUserHandle(c3.admin, c3.adminPW, c3.adminOTP)
	admin3.login()

	var fromCmd, fromCommit []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		// A fresh user each trial: a second login of one user waits for
		// the next TOTP step (30 s), and a lock revokes their certificates.
		name := fmt.Sprintf("bob%d", i)
		bob1 := addUser(b, admin1, name, "ops")
		bob2 := c2.newUserHandle(name, bob1.pw, bob1.otp)
		bob2.login()
		port := freeLoopbackPort(b)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		proxy := exec.Command(bin("tunnel"), "proxy", "db", "web-1/echo", "--port", fmt.Sprint(port))
		proxy.Env = append(cleanEnv(), "TUNNEL_HOME="+bob2.home)
		if err := proxy.Start(); err != nil {
			b.Fatal(err)
		}
		dialRetry(b, addr, echoOnce, 30*time.Second)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if err := echoOnce(c); err != nil {
			b.Fatalf("trial %d: stream before the lock: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		closed := make(chan time.Time, 1)
		go func() {
			_, _ = io.Copy(io.Discard, c)
			closed <- time.Now()
		}()
		b.StartTimer()
		start := time.Now()
		admin3.must("admin", "users", "lock", name)
		committed := time.Now()
		var end time.Time
		select {
		case end = <-closed:
		case <-time.After(60 * time.Second):
			b.Fatalf("trial %d: %s's stream through gateway 2 still open 60s after the lock on gateway 3", i, name)
		}
		b.StopTimer()
		c.Close()
		fromCmd = append(fromCmd, end.Sub(start))
		fromCommit = append(fromCommit, max(0, end.Sub(committed)))
		// The proxy keeps listening after its stream ends: stop it.
		_ = proxy.Process.Kill()
		_ = proxy.Wait()
		i++
		b.StartTimer()
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(mgPercentile(fromCmd, 50)), "p50-ms")
	b.ReportMetric(ms(mgPercentile(fromCmd, 99)), "p99-ms")
	b.ReportMetric(ms(mgPercentile(fromCmd, 100)), "max-ms")
	b.ReportMetric(ms(mgPercentile(fromCommit, 50)), "commit-p50-ms")
	b.ReportMetric(ms(mgPercentile(fromCommit, 99)), "commit-p99-ms")
	b.ReportMetric(ms(mgPercentile(fromCommit, 100)), "commit-max-ms")
	b.Logf("revoke on gateway 3 -> last byte of a stream relayed by gateway 2, %d trials: from the lock command p50 %s p99 %s max %s; from its return p50 %s p99 %s max %s",
		len(fromCmd), mgPercentile(fromCmd, 50), mgPercentile(fromCmd, 99), mgPercentile(fromCmd, 100),
		mgPercentile(fromCommit, 50), mgPercentile(fromCommit, 99), mgPercentile(fromCommit, 100))
}

// BenchmarkIdleStoreQueries measures issue 8's "close to zero queries per
// second" with idle agents: one real gateway on a real PostgreSQL with its
// default heartbeat (10 s), reconciliation (60 s) and audit fold (1 min)
// intervals, and IDLE_AGENTS (default 1,000) real agents (agent.Run in
// this process, each enrolled with its own join token and holding its own
// QUIC connection) connected and idle. It counts the store database's
// transactions (pg_stat_database xact_commit + xact_rollback, read from
// another database) over a window of IDLE_WINDOW (default 60s), first with
// no agent, then with the agents connected, and reports both rates. Every
// store query the gateway runs outside an explicit transaction is one
// transaction here, so transactions/s bounds queries/s from below only by
// the statements batched inside one transaction. PostgreSQL flushes an
// idle backend's counters within about 10 s, which is why the window is
// long. b.N is ignored: run it with -benchtime 1x.
//
//	CI=1 go test -run '^$' -bench BenchmarkIdleStoreQueries -benchtime 1x -timeout 30m ./integration/
func BenchmarkIdleStoreQueries(b *testing.B) {
	n := benchEnvInt(b, "IDLE_AGENTS", 1000)
	window := 60 * time.Second
	if s := os.Getenv("IDLE_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("IDLE_WINDOW: %v", err)
		}
		window = d
	}
	// Every statement is logged, with its database, to count queries and
	// not only transactions.
	srv := pgtest.Start(b, pgtest.WithSetting("log_statement", "all"),
		pgtest.WithSetting("log_line_prefix", "%m [%p] db=%d "))
	gw := startSharedGateways(b, srv.URL(""), 1, "--login-burst", "100000", "--login-rate", "100000", "--max-conns-per-source", "100000")[0]
	admin := adminClient(b, gw)
	defer admin.Close()

	// The counters, read from another database so that reading them
	// adds nothing to the store's.
	statsURL := strings.Replace(srv.URL(""), "/"+srv.Database+"?", "/postgres?", 1)
	stats, err := pgx.Connect(context.Background(), statsURL)
	if err != nil {
		b.Fatalf("connect to the postgres database: %v", err)
	}
	defer stats.Close(context.Background())
	xacts := func() int64 {
		var v int64
		if err := stats.QueryRow(context.Background(),
			`SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1`, srv.Database).Scan(&v); err != nil {
			b.Fatalf("pg_stat_database: %v", err)
		}
		return v
	}
	measure := func(what string) (xactRate, queryRate float64) {
		// Let the counters of what came before settle first.
		time.Sleep(12 * time.Second)
		before := xacts()
		logStart := len(srv.Log())
		time.Sleep(window)
		queries := benchStatements(srv.Log()[logStart:], srv.Database)
		time.Sleep(12 * time.Second) // counters of the window's last seconds
		after := xacts()
		// The trailing settle adds its own transactions: count the window
		// plus the settle.
		xactRate = float64(after-before) / (window + 12*time.Second).Seconds()
		n := 0
		for _, c := range queries {
			n += c
		}
		queryRate = float64(n) / window.Seconds()
		b.Logf("%s: %d store transactions in %s: %.2f/s; %d statements in %s: %.2f/s: %v",
			what, after-before, window+12*time.Second, xactRate, n, window, queryRate, queries)
		return xactRate, queryRate
	}

	b.StopTimer()
	baseX, baseQ := measure("no agent connected")

	// Join tokens and data directories, then the agents, 16 enrolling at
	// a time.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var connected atomic.Int64
	var failed atomic.Int64
	sem := make(chan struct{}, 16)
	dir := b.TempDir()
	enrolStart := time.Now()
	for i := range n {
		name := fmt.Sprintf("idle-%04d", i)
		var tok api.Token
		if err := admin.Do(ctx, http.MethodPost, api.PathTokens, nil, api.CreateTokenRequest{Agent: name}, &tok); err != nil {
			b.Fatalf("token for %s: %v", name, err)
		}
		var once sync.Once
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := agent.Run(ctx, agent.Config{
				DataDir: filepath.Join(dir, name), Gateway: gw.addr, Pin: gw.pin, Token: tok.Token,
				Connected: func(string) {
					once.Do(func() { <-sem; connected.Add(1) })
				},
			})
			once.Do(func() { <-sem })
			if err != nil && ctx.Err() == nil {
				failed.Add(1)
				b.Logf("agent %s: %v", name, err)
			}
		}()
	}
	waitFor(b, 10*time.Minute, fmt.Sprintf("%d agents connected", n), func() bool {
		if failed.Load() > 0 {
			b.Fatalf("%d agents failed", failed.Load())
		}
		return connected.Load() == int64(n)
	})
	b.Logf("%d agents enrolled and connected in %s", n, time.Since(enrolStart).Round(time.Millisecond))
	idleX, idleQ := measure(fmt.Sprintf("%d idle agents connected", n))
	b.ReportMetric(baseX, "base-xact/s")
	b.ReportMetric(idleX, "idle-xact/s")
	b.ReportMetric(baseQ, "base-queries/s")
	b.ReportMetric(idleQ, "idle-queries/s")
	b.ReportMetric(float64(n), "agents")
}

// benchStatements counts the statements PostgreSQL logged (log_statement
// = all, prefix "... db=NAME ") on database db, by their first words.
func benchStatements(log, db string) map[string]int {
	out := map[string]int{}
	for line := range strings.Lines(log) {
		if !strings.Contains(line, " db="+db+" ") {
			continue
		}
		var stmt string
		if _, after, ok := strings.Cut(line, "LOG:  statement: "); ok {
			stmt = after
		} else if _, after, ok := strings.Cut(line, "LOG:  execute "); ok {
			if _, q, ok := strings.Cut(after, ": "); ok {
				stmt = q
			}
		}
		if stmt = strings.TrimSpace(stmt); stmt == "" {
			continue
		}
		if len(stmt) > 50 {
			stmt = stmt[:50]
		}
		out[stmt]++
	}
	return out
}

func benchEnvInt(t testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	var v int
	if _, err := fmt.Sscan(s, &v); err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}
