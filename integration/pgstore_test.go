package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/pgstore"
	"github.com/tunnelhq/tunnel/pkg/store/storetest"
)

// pgDatabases hands out fresh, empty databases on one PostgreSQL server,
// each owned by the app role and dropped when its test ends.
type pgDatabases struct {
	srv *pgtest.Server
	n   atomic.Int64

	mu    sync.Mutex
	admin *pgx.Conn // the app role on its own database, for CREATE/DROP DATABASE
}

func newPGDatabases(t *testing.T, srv *pgtest.Server) *pgDatabases {
	t.Helper()
	srv.SuperPSQL(t, `ALTER ROLE `+pgtest.DefaultUser+` CREATEDB`)
	d := &pgDatabases{srv: srv}
	d.admin = rawConn(t, d.url(srv.Database))
	return d
}

// create makes a new database and returns its name.
func (d *pgDatabases) create(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("pgstore_%d", d.n.Add(1))
	if err := d.exec(t.Context(), `CREATE DATABASE `+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// FORCE: a store that a failed test left open must not keep it.
		if err := d.exec(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Logf("dropping database %s: %v", name, err)
		}
	})
	return name
}

func (d *pgDatabases) exec(ctx context.Context, sql string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err := d.admin.Exec(ctx, sql)
	return err
}

// url returns the store URL of database db, as the app role over TCP.
func (d *pgDatabases) url(db string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", d.srv.User, d.srv.Password, d.srv.Addr, db)
}

// openPGStore opens the store at url and closes it when the test ends.
func openPGStore(t *testing.T, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("pgstore.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawConn connects to url directly, for what a store does not expose:
// tampering, inspecting the schema.
func rawConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("pgx.Connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// verifyLog checks the log of s against its head and returns it.
func verifyLog(t *testing.T, s store.Store) ([]audit.Event, error) {
	t.Helper()
	evs, err := s.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	head, err := s.AuditHead(t.Context())
	if err != nil {
		t.Fatalf("AuditHead: %v", err)
	}
	return evs, audit.Verify(evs, head)
}

var pgT0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func pgEvent(typ audit.Type, subject string) audit.Event {
	return audit.Event{Time: pgT0, Type: typ, Actor: "admin", Subject: subject, Outcome: audit.Success}
}

// TestPGStore runs the store conformance suite, and what only several
// processes sharing one database can show, against a real PostgreSQL. Its
// subtests share the server; "Unavailable", which stops it, comes last.
func TestPGStore(t *testing.T) {
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)

	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			return openPGStore(t, dbs.url(dbs.create(t)))
		})
	})
	t.Run("TwoGateways", func(t *testing.T) { testPGTwoGateways(t, dbs) })
	t.Run("WatchAcrossGateways", func(t *testing.T) { testPGWatchAcrossGateways(t, dbs) })
	t.Run("MigrateConcurrently", func(t *testing.T) { testPGMigrateConcurrently(t, dbs) })
	t.Run("SchemaTooNew", func(t *testing.T) { testPGSchemaTooNew(t, dbs) })
	t.Run("TamperDetected", func(t *testing.T) { testPGTamperDetected(t, dbs) })
	t.Run("AuditFailureRollsBack", func(t *testing.T) { testPGAuditFailureRollsBack(t, dbs) })
	t.Run("TLS", func(t *testing.T) { testPGTLS(t, dbs) })
	t.Run("Reconnect", func(t *testing.T) { testPGReconnect(t, dbs) })
	t.Run("Unavailable", func(t *testing.T) { testPGUnavailable(t, dbs) }) // stops the server: last
}

// testPGTwoGateways: two stores on one database are two gateways, each with
// its own pool. What they do at once keeps one audit chain and the
// cross-process guarantees the interface promises.
func testPGTwoGateways(t *testing.T, dbs *pgDatabases) {
	url := dbs.url(dbs.create(t))
	gws := []*pgstore.Store{openPGStore(t, url), openPGStore(t, url)}
	ctx := t.Context()

	t.Run("AuditChain", func(t *testing.T) {
		// Each gateway appends single events, batches, and audited
		// changes, all at once.
		const perGateway, batch = 12, 4
		var wg sync.WaitGroup
		errs := make(chan error, 3*perGateway*len(gws))
		start := make(chan struct{})
		for g, s := range gws {
			for i := range perGateway {
				wg.Add(3)
				go func() {
					defer wg.Done()
					<-start
					_, err := s.AppendAudit(ctx, pgEvent(audit.LoginSuccess, fmt.Sprintf("gw%d/%d", g, i)))
					errs <- err
				}()
				go func() {
					defer wg.Done()
					<-start
					var evs []audit.Event
					for j := range batch {
						e := pgEvent(audit.StreamAllowed, fmt.Sprintf("gw%d/%d", g, i))
						e.Details = map[string]string{"gw": fmt.Sprint(g), "i": fmt.Sprint(i), "j": fmt.Sprint(j)}
						evs = append(evs, e)
					}
					_, err := s.AppendAudits(ctx, evs)
					errs <- err
				}()
				go func() {
					defer wg.Done()
					<-start
					name := fmt.Sprintf("role-%d-%d", g, i)
					errs <- s.CreateRole(ctx, store.Role{Name: name, CreatedAt: pgT0}, pgEvent(audit.RoleCreated, name))
				}()
			}
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent append: %v", err)
			}
		}
		want := len(gws) * perGateway * (1 + batch + 1)
		for g, s := range gws {
			evs, err := verifyLog(t, s)
			if err != nil {
				t.Fatalf("gateway %d: audit.Verify(ListAudit, AuditHead) = %v; want one valid chain", g, err)
			}
			if len(evs) != want {
				t.Fatalf("gateway %d sees %d events; want %d", g, len(evs), want)
			}
			for i, e := range evs {
				if e.Seq != int64(i+1) {
					t.Fatalf("gateway %d: event %d has Seq %d; want %d", g, i, e.Seq, i+1)
				}
			}
			// A batch is appended whole, whichever gateway's it was.
			for i := 0; i < len(evs); i++ {
				if evs[i].Details["j"] != "0" {
					continue
				}
				for j := 1; j < batch; j++ {
					e := evs[i+j]
					if e.Details["gw"] != evs[i].Details["gw"] || e.Details["i"] != evs[i].Details["i"] || e.Details["j"] != fmt.Sprint(j) {
						t.Fatalf("event %d = %v; batches of the two gateways were interleaved", e.Seq, e.Details)
					}
				}
			}
		}
		roles, err := gws[1].ListRoles(ctx)
		if err != nil || len(roles) != len(gws)*perGateway {
			t.Errorf("ListRoles = %d roles, %v; want %d", len(roles), err, len(gws)*perGateway)
		}
	})

	t.Run("LoginAttempts", func(t *testing.T) {
		// However the attempts are spread over the gateways, at most max
		// are reserved.
		const max, perGateway = 5, 24
		var reserved, refused atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, s := range gws {
			for range perGateway {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := s.ReserveLoginAttempt(ctx, "mallory", pgT0, max, time.Hour)
					switch {
					case err == nil:
						reserved.Add(1)
					case errors.Is(err, store.ErrLockedOut):
						refused.Add(1)
					default:
						t.Errorf("ReserveLoginAttempt: %v", err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		total := int64(len(gws) * perGateway)
		if reserved.Load() != max || refused.Load() != total-max {
			t.Errorf("%d attempts on %d gateways: %d reserved, %d refused; want %d and %d",
				total, len(gws), reserved.Load(), refused.Load(), max, total-max)
		}
		lf, err := gws[0].LoginFailures(ctx, "mallory")
		if err != nil || lf.Count != max || !lf.LockedUntil.Equal(pgT0.Add(time.Hour)) {
			t.Errorf("LoginFailures = %+v, %v; want %d, locked until %v", lf, err, max, pgT0.Add(time.Hour))
		}
	})

	t.Run("OneWinner", func(t *testing.T) {
		// One TOTP step, one join token, one session end: one winner
		// across the gateways.
		must := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		must("CreateUser", gws[0].CreateUser(ctx, store.User{Name: "alice", PasswordHash: "h", CreatedAt: pgT0}, pgEvent(audit.UserCreated, "alice")))
		tok := store.JoinToken{Hash: strings.Repeat("ab", 32), Agent: "web-1", CreatedBy: "admin", CreatedAt: pgT0, ExpiresAt: pgT0.Add(time.Hour)}
		must("CreateJoinToken", gws[1].CreateJoinToken(ctx, tok, pgEvent(audit.TokenCreated, "web-1")))
		must("CreateSession", gws[0].CreateSession(ctx, store.Session{ID: "s1", User: "alice", Node: "web-1", Login: "ubuntu",
			CreatedAt: pgT0, Deadline: pgT0.Add(time.Hour)}, nil, []audit.Event{pgEvent(audit.Type("session.created"), "s1")}))
		before, err := verifyLog(t, gws[0])
		must("verify", err)

		const perGateway = 8
		var totp, tokens, ends atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g, s := range gws {
			for i := range perGateway {
				wg.Add(3)
				go func() {
					defer wg.Done()
					<-start
					ok, err := s.AcceptTOTPStep(ctx, "alice", 58000000)
					if err != nil {
						t.Errorf("AcceptTOTPStep: %v", err)
					}
					if ok {
						totp.Add(1)
					}
				}()
				go func() {
					defer wg.Done()
					<-start
					_, err := s.ConsumeJoinToken(ctx, tok.Hash, pgT0.Add(time.Minute), pgEvent(audit.AgentEnrolled, "web-1"))
					switch {
					case err == nil:
						tokens.Add(1)
					case !errors.Is(err, store.ErrTokenUsed):
						t.Errorf("ConsumeJoinToken: %v", err)
					}
				}()
				go func() {
					defer wg.Done()
					<-start
					reason := fmt.Sprintf("ended by gateway %d, call %d", g, i)
					ss, err := s.EndSession(ctx, "s1", store.SessionRevoked, reason, pgT0.Add(time.Minute), pgEvent(audit.Type("session.revoked"), "s1"))
					if err != nil {
						t.Errorf("EndSession: %v", err)
					}
					if ss.EndReason == reason {
						ends.Add(1)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		if totp.Load() != 1 || tokens.Load() != 1 || ends.Load() != 1 {
			t.Errorf("winners across 2 gateways: %d TOTP steps, %d join tokens, %d session ends; want 1 of each",
				totp.Load(), tokens.Load(), ends.Load())
		}
		after, err := verifyLog(t, gws[1])
		must("verify", err)
		if got := len(after) - len(before); got != 2 {
			t.Errorf("the contest appended %d events; want 2 (one enrolment, one session end)", got)
		}
	})
}

// testPGMigrateConcurrently: several gateways starting at once on an empty
// database all open it, and the schema is applied once.
func testPGMigrateConcurrently(t *testing.T, dbs *pgDatabases) {
	url := dbs.url(dbs.create(t))
	const gateways = 4
	stores := make([]*pgstore.Store, gateways)
	errs := make([]error, gateways)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range gateways {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = pgstore.Open(t.Context(), url)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d of %d at once: %v", i+1, gateways, err)
			continue
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	if t.Failed() {
		return
	}
	c := rawConn(t, url)
	var n, v int
	if err := c.QueryRow(t.Context(), `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != pgstore.SchemaVersion() || v != pgstore.SchemaVersion() {
		t.Errorf("schema_migrations has %d rows up to version %d; want %d up to %d", n, v, pgstore.SchemaVersion(), pgstore.SchemaVersion())
	}
	var heads int
	if err := c.QueryRow(t.Context(), `SELECT COUNT(*) FROM audit_head`).Scan(&heads); err != nil || heads != 1 {
		t.Errorf("audit_head has %d rows, %v; want 1", heads, err)
	}
	for i, s := range stores {
		if _, err := s.AppendAudit(t.Context(), pgEvent(audit.LoginSuccess, fmt.Sprint(i))); err != nil {
			t.Errorf("AppendAudit on store %d: %v", i, err)
		}
	}
	if evs, err := verifyLog(t, stores[0]); err != nil || len(evs) != gateways {
		t.Errorf("log = %d events, %v; want %d verified", len(evs), err, gateways)
	}
}

// testPGSchemaTooNew: a gateway refuses a database an upgraded gateway has
// migrated past what it knows, before writing anything.
func testPGSchemaTooNew(t *testing.T, dbs *pgDatabases) {
	url := dbs.url(dbs.create(t))
	s := openPGStore(t, url)
	s.Close()
	c := rawConn(t, url)
	newer := pgstore.SchemaVersion() + 4
	if _, err := c.Exec(t.Context(), `INSERT INTO schema_migrations (version) VALUES ($1)`, newer); err != nil {
		t.Fatal(err)
	}
	s2, err := pgstore.Open(t.Context(), url)
	if err == nil {
		s2.Close()
		t.Fatalf("Open of a database with a newer schema succeeded")
	}
	want := fmt.Sprintf("database schema version %d is newer than this gateway (%d): upgrade tunnel-gateway", newer, pgstore.SchemaVersion())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Open error = %q; want it to contain %q", err, want)
	}
	if pgstore.IsUnavailable(err) {
		t.Errorf("Open error %q says the store is unavailable; it is reachable and too new", err)
	}
}

// testPGTamperDetected: changes made to the stored log behind the store's
// back break the chain where they were made, and appending goes on from the
// recorded head so the damage stays visible.
func testPGTamperDetected(t *testing.T, dbs *pgDatabases) {
	tests := []struct {
		name    string
		sql     []string
		wantSeq int64
	}{
		{"edit a reason", []string{`UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3`}, 3},
		{"edit details", []string{`UPDATE audit_events SET details = '{"n":"z"}' WHERE seq = 4`}, 4},
		{"delete a middle event", []string{`DELETE FROM audit_events WHERE seq = 3`}, 3},
		{"delete the last event", []string{`DELETE FROM audit_events WHERE seq = 5`}, 5},
		{"delete the last two events", []string{`DELETE FROM audit_events WHERE seq >= 4`}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			url := dbs.url(dbs.create(t))
			s := openPGStore(t, url)
			for i := range 5 {
				e := pgEvent(audit.LoginSuccess, "alice")
				e.Details = map[string]string{"n": fmt.Sprint(i)}
				if _, err := s.AppendAudit(ctx, e); err != nil {
					t.Fatalf("AppendAudit: %v", err)
				}
			}
			if _, err := verifyLog(t, s); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			c := rawConn(t, url)
			for _, q := range tt.sql {
				if _, err := c.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			var le *audit.BrokenLinkError
			if _, err := verifyLog(t, s); !errors.As(err, &le) || le.Seq != tt.wantSeq {
				t.Fatalf("Verify after tampering = %v; want the break at event %d", err, tt.wantSeq)
			}
			if _, err := s.AppendAudit(ctx, pgEvent(audit.LoginSuccess, "bob")); err != nil {
				t.Fatalf("AppendAudit after tampering: %v", err)
			}
			if _, err := verifyLog(t, s); !errors.As(err, &le) || le.Seq != tt.wantSeq {
				t.Errorf("Verify after tampering and appending = %v; want the break at event %d", err, tt.wantSeq)
			}
		})
	}
}

// testPGAuditFailureRollsBack makes the audit insert fail and checks that
// the change it was to record is not made either.
func testPGAuditFailureRollsBack(t *testing.T, dbs *pgDatabases) {
	ctx := t.Context()
	url := dbs.url(dbs.create(t))
	s := openPGStore(t, url)
	c := rawConn(t, url)
	if _, err := c.Exec(ctx, `CREATE FUNCTION audit_full() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'audit log full'; END $$;
		CREATE TRIGGER audit_full BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_full()`); err != nil {
		t.Fatal(err)
	}
	err := s.CreateRole(ctx, store.Role{Name: "ops", CreatedAt: pgT0}, pgEvent(audit.RoleCreated, "ops"))
	if err == nil || !strings.Contains(err.Error(), "audit log full") {
		t.Fatalf("CreateRole with a failing audit log = %v; want the audit error", err)
	}
	if _, err := s.GetRole(ctx, "ops"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRole after a CreateRole whose event failed: %v; want ErrNotFound", err)
	}
	if head, err := s.AuditHead(ctx); err != nil || head != "" {
		t.Errorf("AuditHead = %q, %v; want \"\"", head, err)
	}
}

// testPGTLS turns TLS on in the server and connects with
// sslmode=verify-full: the store's connections are encrypted, and a server
// certificate from another CA is refused.
func testPGTLS(t *testing.T, dbs *pgDatabases) {
	srv := dbs.srv
	db := dbs.create(t)
	dir := t.TempDir()
	ca, caKey, caPEM := newTestCA(t, "tunnel test PostgreSQL CA")
	_, _, otherCAPEM := newTestCA(t, "some other CA")
	certPEM, keyPEM := newServerCert(t, ca, caKey, net.ParseIP("127.0.0.1"))
	caFile, otherCAFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other-ca.pem")
	for f, b := range map[string][]byte{caFile: caPEM, otherCAFile: otherCAPEM} {
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The server's files go where the server's user owns everything, with
	// the modes PostgreSQL insists on for a key.
	var uid, gid int = -1, -1
	if fi, err := os.Stat(srv.DataDir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	serverCert, serverKey := filepath.Join(srv.Dir, "server.crt"), filepath.Join(srv.Dir, "server.key")
	for f, b := range map[string][]byte{serverCert: certPEM, serverKey: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(f, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	srv.SuperPSQL(t,
		fmt.Sprintf(`ALTER SYSTEM SET ssl_cert_file = '%s'`, serverCert),
		fmt.Sprintf(`ALTER SYSTEM SET ssl_key_file = '%s'`, serverKey),
		`ALTER SYSTEM SET ssl = on`,
		`SELECT pg_reload_conf()`)

	url := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=verify-full&sslrootcert=%s", srv.User, srv.Password, srv.Addr, db, caFile)
	// The reload is asynchronous: wait until the server speaks TLS.
	var s *pgstore.Store
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		s, err = pgstore.Open(t.Context(), url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Open with sslmode=verify-full: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.AppendAudit(t.Context(), pgEvent(audit.LoginSuccess, "alice")); err != nil {
		t.Fatalf("AppendAudit over TLS: %v", err)
	}
	got := srv.SuperPSQL(t, fmt.Sprintf(`SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.application_name = 'tunnel-gateway' AND a.datname = '%s'`, db))
	var withTLS, without int
	if _, err := fmt.Sscanf(got, "%d|%d", &withTLS, &without); err != nil || withTLS == 0 || without != 0 {
		t.Errorf("the store's connections: %q (with TLS|without); want some with TLS and none without", got)
	}

	// A server whose certificate does not chain to the CA given is not
	// talked to.
	bad := strings.Replace(url, caFile, otherCAFile, 1)
	s2, err := pgstore.Open(t.Context(), bad)
	if err == nil {
		s2.Close()
		t.Fatalf("Open with the wrong CA succeeded")
	}
	if !pgstore.IsUnavailable(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Open with the wrong CA = %v; want an unavailable store, for the certificate", err)
	}
}

// newTestCA returns a self-signed CA certificate, its key and its PEM.
func newTestCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newServerCert returns a server certificate for ip signed by ca, and its
// key, in PEM.
func newServerCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, ip net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: ip.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{ip},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// testPGReconnect kills every connection of the store's pool, as a
// PostgreSQL restart does, and checks that the next calls succeed on new
// connections without the caller doing anything.
func testPGReconnect(t *testing.T, dbs *pgDatabases) {
	ctx := t.Context()
	db := dbs.create(t)
	s := openPGStore(t, dbs.url(db))
	// Fill the pool with connections.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.AppendAudit(ctx, pgEvent(audit.LoginSuccess, "before")); err != nil {
				t.Errorf("AppendAudit: %v", err)
			}
		}()
	}
	wg.Wait()
	killed := dbs.srv.SuperPSQL(t, fmt.Sprintf(`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = '%s' AND application_name = 'tunnel-gateway'`, db))
	if killed == "0" {
		t.Fatalf("no connection of the store to kill")
	}
	// At once, before the pool's liveness check (connections idle for more
	// than a second) would notice.
	if _, err := s.AppendAudit(ctx, pgEvent(audit.LoginSuccess, "after")); err != nil {
		t.Fatalf("AppendAudit after its %s connections were killed: %v", killed, err)
	}
	if _, err := s.ListRoles(ctx); err != nil {
		t.Fatalf("ListRoles after the connections were killed: %v", err)
	}
	if evs, err := verifyLog(t, s); err != nil || len(evs) != 9 {
		t.Errorf("log after reconnecting = %d events, %v; want 9 verified", len(evs), err)
	}
}

// testPGUnavailable stops PostgreSQL under an open store: calls fail fast
// with an error IsUnavailable recognises, and so does a new Open.
func testPGUnavailable(t *testing.T, dbs *pgDatabases) {
	ctx := t.Context()
	url := dbs.url(dbs.create(t))
	s := openPGStore(t, url)
	if _, err := s.AppendAudit(ctx, pgEvent(audit.LoginSuccess, "alice")); err != nil {
		t.Fatal(err)
	}
	dbs.srv.Stop()

	callCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	calls := map[string]func() error{
		"AppendAudit": func() error { _, err := s.AppendAudit(callCtx, pgEvent(audit.LoginSuccess, "bob")); return err },
		"GetUser":     func() error { _, err := s.GetUser(callCtx, "alice"); return err },
		"ReserveLoginAttempt": func() error {
			_, err := s.ReserveLoginAttempt(callCtx, "alice", pgT0, 5, time.Minute)
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if !pgstore.IsUnavailable(err) {
			t.Errorf("%s with PostgreSQL stopped = %v; want an error IsUnavailable recognises", name, err)
		}
		if errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s with PostgreSQL stopped = %v; it must not look like a missing record", name, err)
		}
	}
	_, err := pgstore.Open(callCtx, url)
	if !pgstore.IsUnavailable(err) {
		t.Errorf("Open with PostgreSQL stopped = %v; want an error IsUnavailable recognises", err)
	}
	if err != nil && strings.Contains(err.Error(), dbs.srv.Password) {
		t.Errorf("Open error %q shows the password", err)
	}
}

// testPGWatchAcrossGateways: a change committed through one gateway's store
// reaches another's watcher with the first gateway's id; when the watcher's
// LISTEN connection is killed, it gets a Resync and then the changes made
// afterwards.
func testPGWatchAcrossGateways(t *testing.T, dbs *pgDatabases) {
	ctx := t.Context()
	db := dbs.create(t)
	url := dbs.url(db)
	open := func(origin string) *pgstore.Store {
		s, err := pgstore.OpenWith(ctx, url, pgstore.Options{Origin: origin})
		if err != nil {
			t.Fatalf("pgstore.OpenWith: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open("gw-a"), open("gw-b")
	ch, err := b.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	next := func(want store.Change) {
		t.Helper()
		select {
		case c := <-ch:
			if c != want {
				t.Fatalf("change = %+v, want %+v", c, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no change within 30s; want %+v", want)
		}
	}
	u := store.User{Name: "alice", PasswordHash: "x", TOTPSecret: []byte("s"), CreatedAt: pgT0}
	if err := a.CreateUser(ctx, u, pgEvent(audit.UserCreated, "alice")); err != nil {
		t.Fatal(err)
	}
	if err := a.SetUserLocked(ctx, "alice", true, pgEvent(audit.UserLocked, "alice")); err != nil {
		t.Fatal(err)
	}
	next(store.Change{Kind: store.ChangeUser, ID: "alice", Origin: "gw-a"})

	killed := dbs.srv.SuperPSQL(t, fmt.Sprintf(`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = '%s' AND query LIKE 'LISTEN%%'`, db))
	if killed != "1" {
		t.Fatalf("killed %s LISTEN connections, want 1", killed)
	}
	next(store.Change{Kind: store.ChangeResync})
	if err := a.SetUserLocked(ctx, "alice", false, pgEvent(audit.UserUnlocked, "alice")); err != nil {
		t.Fatal(err)
	}
	next(store.Change{Kind: store.ChangeUser, ID: "alice", Origin: "gw-a"})
	if b.ListenReconnects() < 1 {
		t.Errorf("ListenReconnects = %d after the LISTEN connection was killed", b.ListenReconnects())
	}
}
