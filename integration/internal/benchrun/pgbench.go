package benchrun

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// pgbenchResult is one `pgbench -S` run.
type pgbenchResult struct {
	TPS          float64 // "tps = N (without initial connection time)"
	Transactions float64 // "number of transactions actually processed: N"
}

var pgTxRE = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)

// pgbenchCmd is pgtest's PgbenchCmd without its testing.TB.
func pgbenchCmd(ctx context.Context, srv *pgtest.Server, addr string, args ...string) *exec.Cmd {
	conn, env := srv.PgbenchArgs(addr)
	cmd := exec.CommandContext(ctx, srv.PgbenchPath, append(conn, args...)...)
	cmd.Env = env
	return cmd
}

// pgbenchInit runs `pgbench -i -s scale` against the server directly, on
// the server's host.
func pgbenchInit(ctx context.Context, server *host, srv *pgtest.Server, scale int) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := pgbenchCmd(cctx, srv, "", "-i", "-q", "-s", strconv.Itoa(scale))
	out, err := server.output(cmd, true)
	if err != nil {
		return fmt.Errorf("pgbench -i -s %d: %v\n%s", scale, err, out)
	}
	return nil
}

// pgbenchSelect runs `pgbench -S -c clients -j threads -T secs` on client
// against addr.
func pgbenchSelect(ctx context.Context, client *host, srv *pgtest.Server, addr string, clients, threads int, d time.Duration) (pgbenchResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	args := []string{"-S", "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(secs)}
	cctx, cancel := context.WithTimeout(ctx, d+2*time.Minute)
	defer cancel()
	cmd := pgbenchCmd(cctx, srv, addr, args...)
	out, err := client.output(cmd, true)
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench %s (to %s): %v\n%s", strings.Join(args, " "), addr, err, out)
	}
	tps, err := pgtest.PgbenchTPS(string(out))
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := pgTxRE.FindStringSubmatch(string(out))
	if m == nil {
		return pgbenchResult{}, fmt.Errorf("pgbench output has no transactions line\n%s", out)
	}
	tx, _ := strconv.ParseFloat(m[1], 64)
	return pgbenchResult{TPS: tps, Transactions: tx}, nil
}
