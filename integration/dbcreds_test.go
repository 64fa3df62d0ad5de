package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/integration/internal/vaulttest"
)

// dbcredsEnv is a cluster whose gateway leases database credentials from
// a real Vault, whose database engine manages users of a real PostgreSQL.
type dbcredsEnv struct {
	v     *vaulttest.Server
	pg    *pgtest.Server
	c     *cluster
	admin *user
}

// Vault's database engine needs a PostgreSQL login that may create and
// drop roles; the users it creates are members of the app role (its
// database's owner). Revoking one ends its sessions, hands what it
// created to app, and drops it.
const (
	dbcredsVaultAdmin   = "vaultadmin"
	dbcredsVaultAdminPW = "vault-admin-password"
	dbcredsCreation     = `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE app;`
	dbcredsRevocation   = `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'; ` +
		`REASSIGN OWNED BY "{{name}}" TO app; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";`
)

func startDBCreds(t *testing.T, extra ...string) *dbcredsEnv {
	t.Helper()
	e := &dbcredsEnv{pg: pgtest.Start(t)}
	e.pg.SuperPSQL(t, fmt.Sprintf("CREATE ROLE %s WITH LOGIN SUPERUSER PASSWORD '%s'", dbcredsVaultAdmin, dbcredsVaultAdminPW))
	e.startVault(t, "orders", map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/app?sslmode=disable", e.pg.Addr),
		"username":       dbcredsVaultAdmin,
		"password":       dbcredsVaultAdminPW,
		"allowed_roles":  "orders-app",
	}, "orders-app", map[string]any{
		"db_name":               "orders",
		"creation_statements":   []string{dbcredsCreation},
		"revocation_statements": []string{dbcredsRevocation},
		"default_ttl":           "1h",
		"max_ttl":               "24h",
	})
	e.startCluster(t, extra...)
	return e
}

// startVault starts a real Vault whose database engine has one connection
// (db) and one role.
func (e *dbcredsEnv) startVault(t *testing.T, db string, config map[string]any, role string, roleConfig map[string]any) {
	t.Helper()
	e.v = vaulttest.Start(t)
	vc := e.v.Client(t)
	if err := vc.Sys().Mount("database", &vault.MountInput{Type: "database"}); err != nil {
		t.Fatalf("enable Vault's database engine: %v", err)
	}
	if _, err := vc.Logical().Write("database/config/"+db, config); err != nil {
		t.Fatalf("configure Vault's database engine: %v", err)
	}
	if _, err := vc.Logical().Write("database/roles/"+role, roleConfig); err != nil {
		t.Fatalf("create the Vault role: %v", err)
	}
}

// startCluster starts a gateway on e's Vault and logs its admin in.
func (e *dbcredsEnv) startCluster(t *testing.T, extra ...string) {
	t.Helper()
	tokenFile := writeSecret(t, e.v.Token)
	e.c = &cluster{t: t, dataDir: filepath.Join(t.TempDir(), "data"), name: "dbcreds", admin: "alice", adminPW: "correct horse battery staple"}
	pwFile := writeSecret(t, e.c.adminPW)
	vaultArgs := []string{"--vault-addr", e.v.Addr, "--vault-token-file", tokenFile}
	out, err := exec.Command(bin("tunnel-gateway"), append([]string{"init", "--data-dir", e.c.dataDir, "--cluster", e.c.name,
		"--admin", e.c.admin, "--admin-password-file", pwFile, "--json"}, vaultArgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("init --vault-addr: %v\n%s", err, out)
	}
	e.c.pin, e.c.adminOTP = initResult(t, out)
	e.c.start(append(append(vaultArgs, "--login-burst", "1000"), extra...)...)
	e.admin = e.c.adminUser()
	e.admin.login()
}

// as returns a copy of the test server that psql and pgbench use as user
// name with no password: what an application that holds no credential
// does.
func (e *dbcredsEnv) as(name string) *pgtest.Server {
	s := *e.pg
	s.User, s.Password = name, ""
	return &s
}

// roleExists reports whether PostgreSQL has a role of that name.
func (e *dbcredsEnv) roleExists(t *testing.T, name string) bool {
	t.Helper()
	return e.pg.SuperPSQL(t, fmt.Sprintf("SELECT count(*) FROM pg_roles WHERE rolname = '%s'", strings.ReplaceAll(name, "'", "''"))) == "1"
}

// streamLeases returns, from the audit log, the lease and database user
// of every allowed stream from caller to target.
func (e *dbcredsEnv) streamLeases(t *testing.T, caller, target string) map[string]string {
	t.Helper()
	var evs []struct {
		Type    string            `json:"type"`
		Actor   string            `json:"actor"`
		Subject string            `json:"subject"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(e.admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, ev := range evs {
		if ev.Type == "stream.allowed" && strings.HasSuffix(ev.Actor, caller) && ev.Subject == target {
			out[ev.Details["lease"]] = ev.Details["db_user"]
		}
	}
	return out
}

// TestDBCredsPostgres: the app connects to its agent's listener with any
// user name and no password; the database's agent logs in with a user the
// gateway leased from the real Vault, so psql and pgbench work and the
// database shows the Vault-made user. Each stream's audit event names the
// lease (never the password). Locking the app's agent revokes its lease:
// Vault drops the user, which can no longer log in; another app's lease
// is untouched. The same holds on the direct path (app-1) and through the
// gateway's relay (app-2, direct: off).
func TestDBCredsPostgres(t *testing.T) {
	// Unused leases are kept far longer than the test, and the periodic
	// reconciliation (which would also revoke a locked agent's) does not
	// run during it: only the lock itself revokes app-1's.
	e := startDBCreds(t, "--vault-db-grace", "1h", "--reconcile-interval", "1h")
	db := e.c.startAgent("db-1", e.admin.token("db-1"), fmt.Sprintf(`expose:
  - name: orders
    address: %s
    protocol: postgres
    credentials: {vault: database/creds/orders-app}
`, e.pg.Addr))
	addr1 := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	addr2 := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	e.c.startAgent("app-1", e.admin.token("app-1"), "listen:\n  - {name: orders, address: "+addr1+", target: db-1/orders}\n")
	e.c.startAgent("app-2", e.admin.token("app-2"), "direct: off\nlisten:\n  - {name: orders, address: "+addr2+", target: db-1/orders}\n")
	e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/orders")
	e.admin.must("admin", "policy", "allow", "--from", "app-2", "--to", "db-1/orders")

	app := e.as("anyone")
	var user1 string
	waitFor(t, 60*time.Second, "psql through app-1's listener", func() bool {
		out, err := app.TryPSQL(addr1, "SELECT current_user, session_user, current_setting('application_name'), current_database();")
		if err != nil {
			t.Logf("psql: %v", err)
			return false
		}
		f := strings.Split(out, "|")
		if len(f) != 4 {
			t.Fatalf("psql printed %q", out)
		}
		if !strings.HasPrefix(f[0], "v-") || f[1] != f[0] || f[2] != "pgtest" || f[3] != "app" {
			t.Fatalf("current_user, session_user, application_name, database = %q; want a Vault-made user (v-...), pgtest, app", out)
		}
		user1 = f[0]
		return true
	})
	// A second connection shares the lease while it lives.
	if got := app.PSQL(t, addr1, "SELECT current_user;"); got != user1 {
		t.Errorf("second connection as %q; want the same leased user %q", got, user1)
	}
	user2 := app.PSQL(t, addr2, "SELECT current_user;")
	if !strings.HasPrefix(user2, "v-") || user2 == user1 {
		t.Errorf("app-2 is %q, app-1 %q: want a Vault-made user of its own", user2, user1)
	}
	if !e.roleExists(t, user1) || !e.roleExists(t, user2) {
		t.Fatalf("the leased users are not in the database")
	}
	// pgbench, through the relay, with several clients.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"-i", "-s", "1", "-q"}, {"-S", "-c", "4", "-j", "2", "-t", "50", "-n"}} {
		cmd := app.PgbenchCmd(ctx, t, addr2, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pgbench %v through app-2's listener: %v\n%s", args, err, out)
		}
	}
	if n := app.PSQL(t, addr2, "SELECT count(*) FROM pgbench_branches;"); n != "1" {
		t.Errorf("pgbench_branches holds %q rows; want 1", n)
	}

	// The audit log names each stream's lease and user, never a password.
	leases1 := e.streamLeases(t, "app-1", "db-1/orders")
	leases2 := e.streamLeases(t, "app-2", "db-1/orders")
	if len(leases1) != 1 || len(leases2) != 1 {
		t.Fatalf("leases in the audit log: app-1 %v, app-2 %v; want one each", leases1, leases2)
	}
	var lease1, lease2 string
	for l, u := range leases1 {
		lease1 = l
		if !strings.HasPrefix(l, "database/creds/orders-app/") || u != user1 {
			t.Errorf("app-1's streams name lease %q user %q; want database/creds/orders-app/... and %q", l, u, user1)
		}
	}
	for l, u := range leases2 {
		lease2 = l
		if u != user2 {
			t.Errorf("app-2's streams name user %q; want %q", u, user2)
		}
	}
	vc := e.v.Client(t)
	if _, err := vc.Sys().Lookup(lease1); err != nil {
		t.Fatalf("Vault does not know app-1's lease %s: %v", lease1, err)
	}

	// A long query of app-1's is running when its agent is locked.
	live := make(chan error, 1)
	go func() {
		_, err := app.TryPSQL(addr1, "SELECT pg_sleep(600);")
		live <- err
	}()
	waitFor(t, 60*time.Second, "app-1's long query running", func() bool {
		return e.pg.SuperPSQL(t, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND query LIKE 'SELECT pg_sleep%%'", user1)) == "1"
	})

	// Locking app-1 revokes its lease: the user is gone from the database,
	// and its live session ends.
	e.admin.must("admin", "agents", "lock", "app-1")
	select {
	case err := <-live:
		if err == nil {
			t.Error("app-1's long query finished normally after the lock")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("app-1's long query still runs after the lock")
	}
	waitFor(t, 60*time.Second, "app-1's database user dropped after the lock", func() bool { return !e.roleExists(t, user1) })
	if _, err := vc.Sys().Lookup(lease1); err == nil {
		t.Errorf("Vault still holds app-1's lease after the lock")
	}
	// That user can no longer log in (Vault's password does not matter:
	// the role does not exist).
	gone := *e.pg
	gone.User, gone.Password = user1, "any"
	if _, err := gone.TryPSQL("", "SELECT 1;"); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("the revoked user logged in: %v", err)
	}
	// app-2's lease is untouched.
	if got := app.PSQL(t, addr2, "SELECT current_user;"); got != user2 {
		t.Errorf("app-2 after app-1's lock: %q, want %q", got, user2)
	}
	if _, err := vc.Sys().Lookup(lease2); err != nil {
		t.Errorf("app-2's lease is gone after app-1's lock: %v", err)
	}
	// The logs name the leased users, never with a password.
	logs := e.c.log.String() + db.log.String()
	if !strings.Contains(logs, user1) {
		t.Errorf("the logs never name the leased user %s", user1)
	}
	e.checkLeaseLogsAndPaths(t, logs, user1, user2)
}

// checkLeaseLogsAndPaths checks that no log line names a leased user
// beside a password, and that app-1's streams went directly to db-1 and
// app-2's through the relay.
func (e *dbcredsEnv) checkLeaseLogsAndPaths(t *testing.T, logs string, users ...string) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if slices.ContainsFunc(users, func(u string) bool { return strings.Contains(line, u) }) &&
			strings.Contains(strings.ToLower(line), "password") && !strings.Contains(line, "[redacted]") {
			t.Errorf("a log line names a leased user and a password: %s", line)
		}
	}
	if got := e.streamPaths(t, "app-1"); got != "direct" {
		t.Errorf("app-1's streams took paths %q; want direct", got)
	}
	if got := e.streamPaths(t, "app-2"); got != "relay" {
		t.Errorf("app-2's streams took paths %q; want relay", got)
	}
}

// streamPaths returns the paths (direct, relay) of caller's allowed
// streams, comma-separated without repeats.
func (e *dbcredsEnv) streamPaths(t *testing.T, caller string) string {
	t.Helper()
	var evs []struct {
		Type    string            `json:"type"`
		Actor   string            `json:"actor"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(e.admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	for _, ev := range evs {
		if ev.Type != "stream.allowed" || !strings.HasSuffix(ev.Actor, caller) {
			continue
		}
		p := ev.Details["path"]
		if p == "" {
			p = "relay"
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return strings.Join(out, ",")
}

// TestDBCredsRevokedWhenUnused: a lease no stream uses is revoked after
// the grace (--vault-db-grace), and the next connection gets a new user.
func TestDBCredsRevokedWhenUnused(t *testing.T) {
	e := startDBCreds(t, "--vault-db-grace", "2s")
	e.c.startAgent("db-1", e.admin.token("db-1"), fmt.Sprintf(`expose:
  - name: orders
    address: %s
    protocol: postgres
    credentials: {vault: database/creds/orders-app}
`, e.pg.Addr))
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	e.c.startAgent("app-1", e.admin.token("app-1"), "listen:\n  - {name: orders, address: "+addr+", target: db-1/orders}\n")
	e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/orders")
	app := e.as("anyone")
	var first string
	waitFor(t, 60*time.Second, "psql through app-1's listener", func() bool {
		out, err := app.TryPSQL(addr, "SELECT current_user;")
		first = out
		return err == nil
	})
	waitFor(t, 60*time.Second, "the unused lease revoked", func() bool { return !e.roleExists(t, first) })
	if second := app.PSQL(t, addr, "SELECT current_user;"); second == first || !strings.HasPrefix(second, "v-") {
		t.Errorf("after the revocation, connected as %q (before: %q); want a new Vault-made user", second, first)
	}
}

// TestDBCredsNeedsVault: without Vault, a stream to a service that logs
// in for the caller is refused with a sentence that says so, and the
// application sees it.
func TestDBCredsNeedsVault(t *testing.T) {
	pg := pgtest.Start(t)
	c := startCluster(t)
	admin := c.adminUser()
	admin.login()
	c.startAgent("db-1", admin.token("db-1"), fmt.Sprintf(`expose:
  - name: orders
    address: %s
    protocol: postgres
    credentials: {vault: database/creds/orders-app}
`, pg.Addr))
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	a := c.startAgent("app-1", admin.token("app-1"), "listen:\n  - {name: orders, address: "+addr+", target: db-1/orders}\n")
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/orders")
	app := *pg
	app.User, app.Password = "anyone", ""
	const want = "this gateway has no Vault: start it with --vault-addr"
	waitFor(t, 60*time.Second, "the refusal in app-1's log", func() bool {
		_, err := app.TryPSQL(addr, "SELECT 1;")
		if err == nil {
			t.Fatal("psql logged in without a credential")
		}
		return strings.Contains(a.log.String(), want)
	})
}

// TestDBCredsUser: a person reaches the database through tunnel proxy db
// with no password, as a user Vault made for them; locking them revokes
// it.
func TestDBCredsUser(t *testing.T) {
	e := startDBCreds(t, "--vault-db-grace", "1h", "--reconcile-interval", "1h")
	e.c.startAgent("db-1", e.admin.token("db-1"), fmt.Sprintf(`expose:
  - name: orders
    address: %s
    protocol: postgres
    credentials: {vault: database/creds/orders-app}
`, e.pg.Addr))
	e.admin.must("admin", "roles", "add", "dba", "--service", "db-1/orders")
	bob := addUser(t, e.admin, "bob", "dba")
	bob.login()
	port := freeLoopbackPort(t)
	bob.backgroundOut("proxy", "db", "db-1/orders", "--port", fmt.Sprint(port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	app := e.as("bob")
	var user string
	waitFor(t, 60*time.Second, "psql through tunnel proxy db", func() bool {
		out, err := app.TryPSQL(addr, "SELECT current_user;")
		user = out
		return err == nil
	})
	if !strings.HasPrefix(user, "v-") {
		t.Fatalf("bob is %q in the database; want a Vault-made user", user)
	}
	leases := e.streamLeases(t, "bob", "db-1/orders")
	if len(leases) != 1 {
		t.Fatalf("bob's leases in the audit log: %v", leases)
	}
	e.admin.must("admin", "users", "lock", "bob")
	waitFor(t, 60*time.Second, "bob's database user dropped after the lock", func() bool { return !e.roleExists(t, user) })
}
