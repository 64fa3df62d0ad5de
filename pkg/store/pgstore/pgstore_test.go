package pgstore

// These tests need no PostgreSQL server. The conformance suite, and what
// several gateways sharing one database must show, run against a real
// server in integration/pgstore_test.go.

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
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

func TestMigrations(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	if SchemaVersion() != len(ms) || len(ms) == 0 {
		t.Errorf("SchemaVersion() = %d with %d migrations", SchemaVersion(), len(ms))
	}
	for _, m := range ms {
		if strings.Contains(strings.ToUpper(m.sql), "BEGIN;") || strings.Contains(strings.ToUpper(m.sql), "COMMIT;") {
			t.Errorf("migration %s manages its own transaction; Open runs each in one", m.name)
		}
	}

	bad := []struct {
		name  string
		files fstest.MapFS
		want  string
	}{
		{"gap", fstest.MapFS{"migrations/0001_a.sql": {}, "migrations/0003_c.sql": {}}, "want version 2"},
		{"bad name", fstest.MapFS{"migrations/0001_a.sql": {}, "migrations/2_b.sql": {}}, "not NNNN_name.sql"},
		{"not sql", fstest.MapFS{"migrations/0001_a.txt": {}}, "not NNNN_name.sql"},
		{"none", fstest.MapFS{"migrations/.keep": {}}, "not NNNN_name.sql"},
	}
	for _, tt := range bad {
		if _, err := loadMigrations(tt.files); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: loadMigrations = %v; want an error saying %q", tt.name, err, tt.want)
		}
	}
}

// writeCA writes a self-signed CA certificate to a temp file, for URLs
// whose sslrootcert pgx reads while parsing.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckTLS(t *testing.T) {
	// PG* variables in the environment change what pgx parses.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "PG") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	ca := writeCA(t)
	tests := []struct {
		url  string
		want string // "" for accepted
	}{
		{"postgres://u:p@db.example:5432/tunnel?sslmode=verify-full&sslrootcert=" + ca, ""},
		{"postgres://u:p@db.example:5432/tunnel?sslmode=verify-ca&sslrootcert=" + ca, ""},
		// libpq (and pgx) treat require with a root CA as verify-ca.
		{"postgres://u:p@db.example:5432/tunnel?sslmode=require&sslrootcert=" + ca, ""},
		{"postgres://u:p@db.example/tunnel?sslmode=verify-full&sslrootcert=system", ""},
		// prefer: unverified TLS, then plaintext.
		{"postgres://u:p@db.example:5432/tunnel", "without verifying the server's certificate"},
		{"postgres://u:p@db.example:5432/tunnel?sslmode=disable", "in plaintext"},
		{"postgres://u:p@db.example:5432/tunnel?sslmode=allow", "in plaintext"},
		{"postgres://u:p@db.example:5432/tunnel?sslmode=prefer", "without verifying the server's certificate"},
		{"postgres://u:p@db.example:5432/tunnel?sslmode=require", "without verifying the server's certificate"},
		{"postgres://u:p@10.0.0.5:5432/tunnel?sslmode=disable", "at 10.0.0.5:5432 in plaintext"},
		// One remote host among local ones is enough to refuse.
		{"postgres://u:p@127.0.0.1:5432,db.example:5433/tunnel?sslmode=disable", "at db.example:5433 in plaintext"},
		// Local: TLS adds nothing.
		{"postgres://u:p@127.0.0.1:5432/tunnel?sslmode=disable", ""},
		{"postgres://u:p@127.0.0.2:5432/tunnel?sslmode=disable", ""},
		{"postgres://u:p@[::1]:5432/tunnel?sslmode=disable", ""},
		{"postgres://u:p@localhost/tunnel", ""},
		{"postgres://u@/tunnel?host=/var/run/postgresql", ""},
		{"host=/tmp dbname=tunnel user=u sslmode=disable", ""},
		{"host=db.example dbname=tunnel user=u sslmode=disable", "in plaintext"},
	}
	for _, tt := range tests {
		cfg, err := pgxpool.ParseConfig(tt.url)
		if err != nil {
			t.Fatalf("ParseConfig(%s): %v", tt.url, err)
		}
		err = checkTLS(cfg.ConnConfig)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("checkTLS(%s) = %v; want it accepted", tt.url, err)
		case tt.want != "" && err == nil:
			t.Errorf("checkTLS(%s) accepted it; want a refusal saying %q", tt.url, tt.want)
		case tt.want != "" && (!strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "sslmode=verify-full&sslrootcert=")):
			t.Errorf("checkTLS(%s) = %q; want it to say %q and what to add", tt.url, err, tt.want)
		}
	}
}

// TestOpenRefusesPlaintext: Open refuses before connecting, naming the
// host and the remedy, and without the password; Insecure lets it try.
func TestOpenRefusesPlaintext(t *testing.T) {
	ctx := t.Context()
	_, err := Open(ctx, "postgres://tunnel:s3cret-pw@192.0.2.1:5432/tunnel?sslmode=disable")
	if err == nil {
		t.Fatalf("Open of a plaintext remote URL succeeded")
	}
	want := "open PostgreSQL store tunnel@192.0.2.1:5432/tunnel: the URL lets the gateway talk to PostgreSQL at 192.0.2.1:5432 in plaintext: add sslmode=verify-full&sslrootcert=/path/to/ca.pem"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Open = %q; want it to begin %q", err, want)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("Open error %q shows the password", err)
	}
	if IsUnavailable(err) {
		t.Errorf("Open refusal %q says the store is unavailable; it is a configuration error", err)
	}

	// With Insecure it tries to connect (and fails: nobody listens there).
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = OpenWith(ctx, "postgres://tunnel:s3cret-pw@"+closedAddr(t)+"/tunnel?sslmode=disable&connect_timeout=5", Options{Insecure: true})
	if err == nil || strings.Contains(err.Error(), "plaintext") {
		t.Errorf("OpenWith(Insecure) = %v; want a connection error, not a refusal", err)
	}
}

// TestPoolConfig: Open's defaults apply where the URL says nothing, and
// the URL's own settings win.
func TestPoolConfig(t *testing.T) {
	for _, tt := range []struct {
		url            string
		maxConns       int32
		connectTimeout time.Duration
		app            string
	}{
		{"postgres://tunnel@localhost/tunnel?sslmode=disable", DefaultMaxConns, DefaultConnectTimeout, "tunnel-gateway"},
		{"postgres://tunnel@localhost/tunnel?sslmode=disable&pool_max_conns=3&connect_timeout=2&application_name=gw-a", 3, 2 * time.Second, "gw-a"},
		{"host=localhost user=tunnel sslmode=disable pool_max_conns=40", 40, DefaultConnectTimeout, "tunnel-gateway"},
	} {
		cfg, err := poolConfig(tt.url, Options{})
		if err != nil {
			t.Errorf("poolConfig(%q): %v", tt.url, err)
			continue
		}
		if cfg.MaxConns != tt.maxConns || cfg.ConnConfig.ConnectTimeout != tt.connectTimeout || cfg.ConnConfig.RuntimeParams["application_name"] != tt.app {
			t.Errorf("poolConfig(%q): max conns %d, connect timeout %s, application %q; want %d, %s, %q", tt.url,
				cfg.MaxConns, cfg.ConnConfig.ConnectTimeout, cfg.ConnConfig.RuntimeParams["application_name"], tt.maxConns, tt.connectTimeout, tt.app)
		}
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := Open(ctx, "postgres://tunnel:s3cret-pw@"+closedAddr(t)+"/tunnel?sslmode=disable")
	if !IsUnavailable(err) {
		t.Fatalf("Open of an address nobody listens on = %v; want an error IsUnavailable recognises", err)
	}
	if !strings.Contains(err.Error(), "PostgreSQL unavailable: ") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("Open = %q; want it to say PostgreSQL is unavailable, without the password", err)
	}
	if _, err := Open(ctx, ""); err == nil || IsUnavailable(err) {
		t.Errorf("Open(\"\") = %v; want a plain error", err)
	}
	for _, url := range []string{
		"postgres://u:s3cret-pw@127.0.0.1/x?sslmode=bogus",
		"postgres://u:s3cret-pw@127.0.0.1:notaport/x",
		"postgres://u:s3cret-pw@127.0.0.1/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
		"postgres://u@127.0.0.1/x?password=s3cret-pw&sslmode=bogus",
		"host=127.0.0.1 password=s3cret-pw sslmode=bogus",
		"postgres://u:s3cret%25pw@127.0.0.1/x?sslmode=bogus",
		"postgres://u:s3cret-pw@127.0.0.1/x\x00?sslmode=bogus",
	} {
		_, err := Open(ctx, url)
		if err == nil || IsUnavailable(err) {
			t.Errorf("Open(%s) = %v; want a plain error", url, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%s) = %q; it shows the password", url, err)
		}
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	pg := func(code string) error { return fmt.Errorf("query: %w", &pgconn.PgError{Code: code, Message: "m"}) }
	tests := []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
		retry       bool // before COMMIT
	}{
		{"unique violation", ctx, pg("23505"), false, false},
		{"serialization failure", ctx, pg("40001"), false, true},
		{"deadlock", ctx, pg("40P01"), false, true},
		{"admin shutdown", ctx, pg("57P01"), true, true},
		{"crash shutdown", ctx, pg("57P02"), true, true},
		{"cannot connect now", ctx, pg("57P03"), true, true},
		{"connection failure", ctx, pg("08006"), true, true},
		{"lost connection", ctx, fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true, true},
		{"closed connection", ctx, fmt.Errorf("x: %w", pgconn.ErrConnClosed), true, true},
		{"network", ctx, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, true, true},
		{"connect", ctx, &pgconn.ConnectError{}, true, false},
		{"caller gave up", cancelled, fmt.Errorf("read: %w", io.ErrUnexpectedEOF), false, false},
		{"caller gave up on a retryable error", cancelled, pg("40001"), false, false},
		{"not found", ctx, store.ErrNotFound, false, false},
	}
	for _, tt := range tests {
		got := classify(tt.ctx, tt.err)
		if IsUnavailable(got) != tt.unavailable {
			t.Errorf("%s: IsUnavailable(classify(%v)) = %v; want %v", tt.name, tt.err, !tt.unavailable, tt.unavailable)
		}
		if !errors.Is(got, tt.err) {
			t.Errorf("%s: classify(%v) = %v; it no longer wraps the error", tt.name, tt.err, got)
		}
		if r := retryable(tt.ctx, tt.err, true); r != tt.retry {
			t.Errorf("%s: retryable(before COMMIT) = %v; want %v", tt.name, r, tt.retry)
		}
		// After COMMIT was sent, only what the server rolled back itself.
		wantAfter := tt.retry && (pgCode(tt.err) == codeSerializationFailure || pgCode(tt.err) == codeDeadlockDetected)
		if r := retryable(tt.ctx, tt.err, false); r != wantAfter {
			t.Errorf("%s: retryable(after COMMIT) = %v; want %v", tt.name, r, wantAfter)
		}
	}
	if classify(ctx, nil) != nil {
		t.Errorf("classify(nil) is not nil")
	}
	twice := classify(ctx, classify(ctx, io.ErrUnexpectedEOF))
	if strings.Count(twice.Error(), "PostgreSQL unavailable") != 1 {
		t.Errorf("classifying twice = %q; want one mention", twice)
	}
}

func TestRetry(t *testing.T) {
	s := &Store{} // retry uses no connection
	ctx := context.Background()
	serialization := &pgconn.PgError{Code: codeSerializationFailure}
	tests := []struct {
		name         string
		errs         []error // one per attempt; nil ends
		beforeCommit bool
		wantCalls    int
		wantErr      error
	}{
		{"success", []error{nil}, true, 1, nil},
		{"two serialization failures", []error{serialization, serialization, nil}, true, 3, nil},
		{"always failing", []error{serialization, serialization, serialization, serialization, serialization, serialization}, true, MaxAttempts, serialization},
		{"lost before COMMIT", []error{io.ErrUnexpectedEOF, nil}, true, 2, nil},
		{"lost during COMMIT", []error{io.ErrUnexpectedEOF, nil}, false, 1, ErrUnavailable},
		{"refused", []error{store.ErrExists, nil}, true, 1, store.ErrExists},
	}
	for _, tt := range tests {
		calls := 0
		err := s.retry(ctx, func() (error, bool) {
			err := tt.errs[calls]
			calls++
			return err, tt.beforeCommit
		})
		if calls != tt.wantCalls {
			t.Errorf("%s: %d attempts; want %d", tt.name, calls, tt.wantCalls)
		}
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%s: retry = %v; want %v", tt.name, err, tt.wantErr)
		}
	}

	// A caller that gives up stops the retries.
	cctx, cancel := context.WithCancel(ctx)
	calls := 0
	err := s.retry(cctx, func() (error, bool) {
		calls++
		cancel()
		return serialization, true
	})
	if calls != 1 || !errors.Is(err, serialization) {
		t.Errorf("retry with a cancelled context: %d attempts, %v; want 1 and the failure", calls, err)
	}
}

func TestCleanEvent(t *testing.T) {
	ev := audit.Event{
		Time:    time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC),
		Type:    audit.LoginFailure,
		Actor:   "mal\x00lory",
		Subject: "bad \xff utf-8",
		Outcome: audit.Failure,
		Reason:  "fine",
		Details: map[string]string{"user\x00": "x\xfey", "ok": "ok"},
	}
	got := cleanEvent(ev)
	want := ev
	want.Actor, want.Subject = "mal\uFFFDlory", "bad \uFFFD utf-8"
	want.Details = map[string]string{"user\uFFFD": "x\uFFFDy", "ok": "ok"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cleanEvent = %+v; want %+v", got, want)
	}
	if ev.Details["user\x00"] != "x\xfey" {
		t.Errorf("cleanEvent changed the caller's details map")
	}
	clean := audit.Event{Type: audit.LoginSuccess, Actor: "alice", Subject: "żółw ✓", Details: map[string]string{"k": "v"}}
	if got := cleanEvent(clean); fmt.Sprint(got) != fmt.Sprint(clean) {
		t.Errorf("cleanEvent changed a clean event: %+v", got)
	}
	// The cleaned event chains and verifies like any other.
	c := audit.Chain(nil, got)
	if err := audit.Verify([]audit.Event{c}, c.Hash); err != nil {
		t.Errorf("Verify of a cleaned event: %v", err)
	}
}

func TestValues(t *testing.T) {
	in := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))
	if got := ts(in); got.Location() != time.UTC || got.Nanosecond() != 535897000 || !got.Equal(in.Truncate(time.Microsecond)) {
		t.Errorf("ts(%v) = %v; want UTC, truncated to microseconds", in, got)
	}
	if nullTS(time.Time{}) != nil {
		t.Errorf("nullTS(zero) is not NULL")
	}
	if got := fromNull(nullTS(in)); !got.Equal(ts(in)) || got.Location() != time.UTC {
		t.Errorf("fromNull(nullTS(%v)) = %v", in, got)
	}
	if list(nil) == nil || unlist([]string{}) != nil {
		t.Errorf("list(nil) must not be NULL and unlist({}) must be nil")
	}
}

func TestCloseTwice(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("postgres://u@" + closedAddr(t) + "/x?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg) // connects lazily
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{pool: pool}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.ListUsers(t.Context()); err == nil || IsUnavailable(err) {
		t.Errorf("ListUsers after Close = %v; want an error that is not unavailability", err)
	}
}
