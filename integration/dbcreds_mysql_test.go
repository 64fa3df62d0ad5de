package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"vitess.io/vitess/go/mysql"

	"github.com/tunnelhq/tunnel/integration/internal/mariadbtest"
)

// Vault's database engine logs in to MariaDB as an administrator that may
// create users and grant them the app database; each user it makes may
// use that database only. Revoking one ends its sessions and drops it.
const (
	mysqlVaultAdminPW = "vault-admin-password"
	mysqlCreation     = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT ALL PRIVILEGES ON app.* TO '{{name}}'@'%';"
	mysqlRevocation   = "DROP USER IF EXISTS '{{name}}'@'%';"
)

// startDBCredsMariaDB is a cluster whose gateway leases MariaDB users from
// a real Vault (its mysql-database-plugin) for a real MariaDB.
func startDBCredsMariaDB(t *testing.T, withTLS bool, extra ...string) (*dbcredsEnv, *mariadbtest.Server) {
	t.Helper()
	var opts []mariadbtest.Option
	if withTLS {
		// The server offers TLS with a certificate of a CA of its own.
		ca, caKey, caPEM := newTestCA(t, "mariadb test CA")
		certPEM, keyPEM := newServerCert(t, ca, caKey, net.IPv4(127, 0, 0, 1))
		dir := t.TempDir()
		files := map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		opts = append(opts, mariadbtest.WithServerArgs("--ssl-ca="+filepath.Join(dir, "ca.pem"),
			"--ssl-cert="+filepath.Join(dir, "cert.pem"), "--ssl-key="+filepath.Join(dir, "key.pem")))
	}
	my := mariadbtest.Start(t, opts...)
	my.RootSQL(t, "CREATE USER 'vaultadmin'@'%' IDENTIFIED BY '"+mysqlVaultAdminPW+"'; "+
		"GRANT ALL PRIVILEGES ON *.* TO 'vaultadmin'@'%' WITH GRANT OPTION;")
	e := &dbcredsEnv{}
	e.startVault(t, "shop", map[string]any{
		"plugin_name":    "mysql-database-plugin",
		"connection_url": fmt.Sprintf("{{username}}:{{password}}@tcp(%s)/", my.Addr),
		"username":       "vaultadmin",
		"password":       mysqlVaultAdminPW,
		"allowed_roles":  "shop-app",
	}, "shop-app", map[string]any{
		"db_name":               "shop",
		"creation_statements":   []string{mysqlCreation},
		"revocation_statements": []string{mysqlRevocation},
		"default_ttl":           "1h",
		"max_ttl":               "24h",
	})
	e.startCluster(t, extra...)
	return e, my
}

// mysqlUserExists reports whether MariaDB has a user of that name.
func mysqlUserExists(t *testing.T, my *mariadbtest.Server, name string) bool {
	t.Helper()
	return my.RootSQL(t, fmt.Sprintf("SELECT COUNT(*) FROM mysql.user WHERE User = '%s'", strings.ReplaceAll(name, "'", "''"))) != "0"
}

// TestDBCredsMariaDBWithoutTLS: a server that offers no TLS is logged in
// to in the clear.
func TestDBCredsMariaDBWithoutTLS(t *testing.T) {
	e, my := startDBCredsMariaDB(t, false)
	e.c.startAgent("db-1", e.admin.token("db-1"), fmt.Sprintf(`expose:
  - name: shop
    address: %s
    protocol: mysql
    credentials: {vault: database/creds/shop-app}
`, my.Addr))
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	e.c.startAgent("app-1", e.admin.token("app-1"), "listen:\n  - {name: shop, address: "+addr+", target: db-1/shop}\n")
	e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/shop")
	app := *my
	app.User, app.Password = "anyone", ""
	waitFor(t, 60*time.Second, "mariadb through app-1's listener", func() bool {
		out, err := app.TryMySQL(addr, "SELECT CURRENT_USER(), @@have_ssl;")
		if err != nil {
			t.Logf("mariadb: %v", err)
			return false
		}
		if f := strings.Split(out, "\t"); len(f) != 2 || !strings.HasPrefix(f[0], "v-") || f[1] != "DISABLED" {
			t.Fatalf("CURRENT_USER(), @@have_ssl = %q; want a Vault-made user on a server without TLS", out)
		}
		return true
	})
}

// TestDBCredsMariaDB: the app connects to its agent's listener with the
// real mariadb client, any user name and no password; the database's
// agent logs in to the real MariaDB as a user the gateway leased from the
// real Vault, and the session passes through (several statements in one
// call, a 20,000-row result, the application's character set and
// database). A database the Vault user may not use is refused with
// MariaDB's own error. Each stream's audit event names the lease. Locking
// the app's agent revokes the lease: the user is dropped and can no longer
// log in; the other app's lease is untouched. One app takes the direct
// path, the other the gateway's relay.
func TestDBCredsMariaDB(t *testing.T) {
	e, my := startDBCredsMariaDB(t, true, "--vault-db-grace", "1h", "--reconcile-interval", "1h")
	db := e.c.startAgent("db-1", e.admin.token("db-1"), fmt.Sprintf(`expose:
  - name: shop
    address: %s
    protocol: mysql
    credentials: {vault: database/creds/shop-app}
`, my.Addr))
	addr1 := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	addr2 := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	e.c.startAgent("app-1", e.admin.token("app-1"), "listen:\n  - {name: shop, address: "+addr1+", target: db-1/shop}\n")
	e.c.startAgent("app-2", e.admin.token("app-2"), "direct: off\nlisten:\n  - {name: shop, address: "+addr2+", target: db-1/shop}\n")
	e.admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "db-1/shop")
	e.admin.must("admin", "policy", "allow", "--from", "app-2", "--to", "db-1/shop")

	// The application holds no credential: any user name, no password.
	app := *my
	app.User, app.Password = "anyone", ""
	var user1 string
	waitFor(t, 60*time.Second, "mariadb through app-1's listener", func() bool {
		out, err := app.TryMySQL(addr1, "SELECT CURRENT_USER(), DATABASE();")
		if err != nil {
			t.Logf("mariadb: %v", err)
			return false
		}
		f := strings.Split(out, "\t")
		if len(f) != 2 || !strings.HasPrefix(f[0], "v-") || !strings.HasSuffix(f[0], "@%") || f[1] != "app" {
			t.Fatalf("CURRENT_USER(), DATABASE() = %q; want a Vault-made user (v-...@%%) and app", out)
		}
		user1 = strings.TrimSuffix(f[0], "@%")
		return true
	})
	if !mysqlUserExists(t, my, user1) {
		t.Fatalf("the leased user %s is not in the database", user1)
	}
	// The agent's login to the server is TLS (the server offers it); the
	// application's side is the tunnel.
	if got := app.MySQL(t, addr1, "SHOW SESSION STATUS LIKE 'Ssl_version';"); got != "Ssl_version\tTLSv1.3" {
		t.Errorf("the session's TLS, as MariaDB sees it: %q; want TLSv1.3", got)
	}
	// Several statements in one call, written and read back.
	if got := app.MySQL(t, addr1, "CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40)); "+
		"INSERT INTO orders VALUES (1, 'tea'), (2, 'scones'); SELECT COUNT(*), GROUP_CONCAT(item ORDER BY id) FROM orders;"); got != "2\ttea,scones" {
		t.Errorf("the orders written and read back: %q; want 2 rows", got)
	}
	// A large result, through the relay.
	user2 := strings.TrimSuffix(app.MySQL(t, addr2, "SELECT CURRENT_USER();"), "@%")
	if !strings.HasPrefix(user2, "v-") || user2 == user1 {
		t.Errorf("app-2 is %q, app-1 %q: want a Vault-made user of its own", user2, user1)
	}
	rows := app.MySQL(t, addr2, "SELECT seq, REPEAT('x', 100) FROM seq_1_to_20000;")
	if n := strings.Count(rows, "\n") + 1; n != 20000 || !strings.HasPrefix(rows, "1\t") || !strings.HasSuffix(rows, "20000\t"+strings.Repeat("x", 100)) {
		t.Errorf("a 20,000-row result came through as %d lines", n)
	}
	// A client that asks for DEPRECATE_EOF (the mariadb client above does
	// not) and, once, FOUND_ROWS: Vitess's go/mysql, as a Go program. The
	// server login copies both: rows come back whole, and an UPDATE that
	// changes nothing counts its matched row only with FOUND_ROWS.
	host, port, _ := net.SplitHostPort(addr2)
	portN, _ := strconv.Atoi(port)
	for _, found := range []bool{false, true} {
		p := &mysql.ConnParams{Host: host, Port: portN, Uname: "anyone", DbName: "app", ConnectTimeoutMs: 30000}
		if found {
			p.Flags = mysql.CapabilityClientFoundRows
		}
		c, err := mysql.Connect(context.Background(), p)
		if err != nil {
			t.Fatalf("Vitess's client through app-2's listener: %v", err)
		}
		r, err := c.ExecuteFetch("SELECT id, item FROM orders ORDER BY id", 10, true)
		if err != nil {
			t.Errorf("SELECT with DEPRECATE_EOF: %v", err)
		} else if len(r.Rows) != 2 || r.Rows[1][1].ToString() != "scones" || len(r.Fields) != 2 {
			t.Errorf("SELECT with DEPRECATE_EOF: %v; want the 2 orders", r.Rows)
		}
		r, err = c.ExecuteFetch("UPDATE orders SET item = item WHERE id = 1", 0, false)
		want := uint64(0)
		if found {
			want = 1
		}
		if err != nil {
			t.Errorf("UPDATE through app-2's listener: %v", err)
		} else if r.RowsAffected != want {
			t.Errorf("UPDATE changing nothing, FOUND_ROWS %v: %d rows; want %d", found, r.RowsAffected, want)
		}
		c.Close()
	}
	// The application's character set is the session's.
	utf := app
	if got, err := utf.TryMySQLArgs(addr1, "SELECT @@character_set_client, @@collation_connection;", "--default-character-set=latin1"); err != nil || got != "latin1\tlatin1_swedish_ci" {
		t.Errorf("with --default-character-set=latin1 the session has %q (%v); want latin1", got, err)
	}
	// A database the leased user may not use: MariaDB's own refusal.
	other := app
	other.Database = "mysql"
	if _, err := other.TryMySQL(addr1, "SELECT 1;"); err == nil || !strings.Contains(err.Error(), "Access denied for user") {
		t.Errorf("the database mysql through the listener: %v; want MariaDB's access denied", err)
	}

	// Junk and silent connections to the listener, and 16 clients at once:
	// the junk is refused, the clients all log in, and a client after them
	// too.
	var junk []net.Conn
	for i := range 50 {
		c, err := net.Dial("tcp", addr1)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			c.Close()
		case 1:
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			junk = append(junk, c)
		default:
			junk = append(junk, c) // silent
		}
	}
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			_, err := app.TryMySQL(addr1, "SELECT COUNT(*) FROM orders;")
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Errorf("one of 16 clients at once: %v", err)
		}
	}
	for _, c := range junk {
		c.Close()
	}
	if got := app.MySQL(t, addr1, "SELECT CURRENT_USER();"); got != user1+"@%" {
		t.Errorf("after the junk: %q", got)
	}

	// The audit log names each stream's lease and user.
	leases1 := e.streamLeases(t, "app-1", "db-1/shop")
	if len(leases1) != 1 {
		t.Fatalf("app-1's leases in the audit log: %v; want one", leases1)
	}
	var lease1 string
	for l, u := range leases1 {
		lease1 = l
		if !strings.HasPrefix(l, "database/creds/shop-app/") || u != user1 {
			t.Errorf("app-1's streams name lease %q user %q; want database/creds/shop-app/... and %q", l, u, user1)
		}
	}

	// A long query of app-1's runs when its agent is locked: the lock ends
	// it, revokes the lease and drops the user.
	live := make(chan error, 1)
	go func() {
		_, err := app.TryMySQL(addr1, "SELECT SLEEP(600);")
		live <- err
	}()
	waitFor(t, 60*time.Second, "app-1's long query running", func() bool {
		return my.RootSQL(t, fmt.Sprintf("SELECT COUNT(*) FROM information_schema.processlist WHERE User = '%s' AND Info LIKE 'SELECT SLEEP%%'", user1)) == "1"
	})
	e.admin.must("admin", "agents", "lock", "app-1")
	select {
	case err := <-live:
		if err == nil {
			t.Error("app-1's long query finished normally after the lock")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("app-1's long query still runs after the lock")
	}
	waitFor(t, 60*time.Second, "app-1's database user dropped after the lock", func() bool { return !mysqlUserExists(t, my, user1) })
	if _, err := e.v.Client(t).Sys().Lookup(lease1); err == nil {
		t.Errorf("Vault still holds app-1's lease after the lock")
	}
	gone := *my
	gone.User, gone.Password = user1, "any"
	if _, err := gone.TryMySQL("", "SELECT 1;"); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("the revoked user logged in: %v", err)
	}
	// app-2's lease is untouched.
	if got := app.MySQL(t, addr2, "SELECT CURRENT_USER();"); got != user2+"@%" {
		t.Errorf("app-2 after app-1's lock: %q, want %s@%%", got, user2)
	}
	e.checkLeaseLogsAndPaths(t, e.c.log.String()+db.log.String(), user1, user2)
}
