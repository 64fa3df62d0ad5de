// Package pgstore is the PostgreSQL implementation of [store.Store]: the
// gateway's state in a database that several gateways share, through
// github.com/jackc/pgx/v5 (pgxpool). It passes the same conformance suite
// as the embedded SQLite store (pkg/store/storetest), so callers never see
// which one they have.
//
// # Connecting
//
// Open takes a libpq connection URL and returns a ready store, its schema
// up to date:
//
//	st, err := pgstore.Open(ctx, "postgres://tunnel:PASSWORD@db.internal:5432/tunnel?sslmode=verify-full&sslrootcert=/etc/tunnel/pg-ca.pem")
//	if err != nil {
//		return err
//	}
//	defer st.Close()
//
// Give the gateway a database of its own (CREATE DATABASE tunnel OWNER
// tunnel): the tables live in the connection's search_path, normally the
// schema public, and the role needs to create tables there the first time
// and at each upgrade. Every gateway of a cluster uses the same URL (or
// URLs naming the same database).
//
// # TLS
//
// The network between a gateway and its database is not trusted, so Open
// refuses to talk to a host other than loopback (127.0.0.0/8, ::1,
// localhost) or a unix socket (host=/path) unless the URL makes pgx verify
// the server's certificate:
//
//   - sslmode=verify-full&sslrootcert=/path/to/ca.pem checks that the server's
//     certificate chains to that CA and names the host in the URL (the
//     recommended setting; sslrootcert=system uses the system's roots);
//   - sslmode=verify-ca checks the chain only, for a private CA whose
//     certificates do not name the host;
//   - sslcert=/path/client.pem&sslkey=/path/client-key.pem adds a client
//     certificate, for a server whose pg_hba.conf says "hostssl ... cert".
//
// Without sslmode, pgx (like libpq) tries TLS without checking the
// certificate and falls back to plaintext; that and sslmode=disable, allow,
// prefer or require (without sslrootcert) are refused with a message that
// says what to add. [Options.Insecure] lifts the refusal, for a network the
// operator trusts. On the server, set ssl = on with ssl_cert_file and
// ssl_key_file, and use hostssl lines in pg_hba.conf so that plaintext
// connections are refused there too.
//
// Other URL parameters are pgx's: connect_timeout (Open sets 10 s if the
// URL has none), application_name (default tunnel-gateway), pool_max_conns
// (default [DefaultMaxConns]) and the PG*
// environment variables. Behind PgBouncer in transaction mode add
// default_query_exec_mode=exec, as pgx caches prepared statements per
// connection otherwise.
//
// # Schema
//
// The schema is a series of migrations embedded in the binary
// (migrations/NNNN_name.sql). Open applies those the database lacks, each in
// its own transaction holding a transaction-level advisory lock
// (pg_advisory_xact_lock), so that several gateways starting at once apply
// each migration once, and records them in schema_migrations. A database
// whose schema is newer than the binary is refused ("database schema version
// N is newer than this gateway (M): upgrade tunnel-gateway") before anything
// is written.
//
// # Concurrency
//
// The audit log is one hash chain however many gateways append to it. Every
// transaction that appends events (which is every change but the few the
// interface says append nothing) begins by locking the one row of
// audit_head with SELECT ... FOR UPDATE, chains its events after the head it
// read, inserts them and moves the head before it commits: the database, not
// a process, serialises the chain. Because the lock is taken first, those
// transactions run one after another, as SQLite's single writer runs them,
// and each of their read-then-write steps (is the token used? is the user
// locked?) sees every change committed before it, in PostgreSQL's default
// READ COMMITTED isolation. Group commit ([Store.AppendAudits]) appends a
// whole batch under one lock and in one round trip.
//
// The unaudited changes are made atomic on their own rows:
// ReserveLoginAttempt locks the name's counter row (SELECT ... FOR UPDATE,
// after an INSERT ... ON CONFLICT DO NOTHING creates it), AcceptTOTPStep is
// one conditional UPDATE (WHERE totp_last_step < step), TouchAgent only
// moves last_seen forward (GREATEST), and AddSessionBytes adds in one
// UPDATE.
//
// # Errors and retries
//
// Errors wrap the sentinels of package store like sqlitestore's do. A
// transaction that fails with a serialization failure (40001) or a deadlock
// (40P01), or loses its connection before its COMMIT was sent (so it cannot
// have committed), is run again, up to [MaxAttempts] times in all, after a
// short backoff; pgxpool replaces broken connections by itself, so a store
// whose PostgreSQL restarted recovers without help.
//
// An error that means PostgreSQL could not be reached (connection refused or
// lost, server shutting down, TLS failure) wraps [ErrUnavailable]; test it
// with [IsUnavailable] and tell the user "the gateway cannot reach its
// store: ..." rather than blaming their request. A connection lost during
// COMMIT is not retried: the change may or may not have been made, and the
// error says the store was unavailable.
//
// # Values
//
// Times are TIMESTAMPTZ and come back in UTC, truncated to microseconds
// ([audit.Normalize]); durations are BIGINT nanoseconds; Role.Logins,
// Role.Nodes, Role.Services and IssuedCert.Principals are TEXT[] kept in the
// order given; a user's roles come back sorted by name; empty lists and maps
// come back nil. Listings are in byte order (COLLATE "C"), as in SQLite.
//
// PostgreSQL text cannot hold a NUL byte or invalid UTF-8. In an audit event
// such characters are replaced by U+FFFD before the event is chained, so that
// an event carrying, say, a malformed user name is still recorded (and
// verifies) instead of failing the change or a whole group commit with it;
// elsewhere they make the call fail.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// MaxAttempts is how many times a transaction is run before a transient
// failure (serialization failure, deadlock, connection lost before COMMIT)
// is returned.
const MaxAttempts = 5

// DefaultConnectTimeout is the connect_timeout Open uses when the URL sets
// none.
const DefaultConnectTimeout = 10 * time.Second

// DefaultMaxConns is the pool_max_conns Open uses when the URL sets none
// (pgx's own default is 4 on a machine of up to 4 CPUs). A gateway's
// queries are short and mostly wait on round trips, not on the
// database's CPU: when every agent of a restarted gateway reconnects at
// once, each connection's lookups queued behind 4 pooled connections and
// held its handshake slot meanwhile. The gateway also holds one more
// connection for LISTEN; PostgreSQL's default max_connections (100) fits
// five gateways.
const DefaultMaxConns = 16

// Store is a [store.Store] kept in a PostgreSQL database. It is safe for
// concurrent use, also by several processes (gateways) sharing the
// database.
type Store struct {
	pool *pgxpool.Pool
	// connCfg opens the LISTEN connection (watch.go); origin is the gateway
	// id carried by the changes this store emits.
	connCfg *pgx.ConnConfig
	origin  string

	changes     store.Broker
	listenOnce  sync.Once
	listenReady chan struct{}
	listenCtx   context.Context
	listenStop  context.CancelFunc
	listenWG    sync.WaitGroup
	listenErrs  atomic.Int64

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Options tune OpenWith. The zero value is the default.
type Options struct {
	// Insecure allows plaintext or unverified TLS connections to a host
	// other than loopback or a unix socket. Leave it off unless the network
	// between the gateway and PostgreSQL is trusted.
	Insecure bool
	// Origin is the id of the gateway using the store, carried by the
	// changes it emits (store.Change.Origin), so that a gateway can tell
	// its own changes from the others'.
	Origin string
}

// Open connects to the PostgreSQL database at url (postgres://... or
// postgresql://...) and brings its schema up to date, with the default
// options.
func Open(ctx context.Context, url string) (*Store, error) {
	return OpenWith(ctx, url, Options{})
}

// poolConfig parses url into the pool's configuration with Open's
// defaults, and refuses a connection that would not be verified TLS
// unless opts.Insecure.
func poolConfig(url string, opts Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, parseError(url, err)
	}
	if !opts.Insecure {
		if err := checkTLS(cfg.ConnConfig); err != nil {
			return nil, fmt.Errorf("open PostgreSQL store %s: %w", describe(cfg.ConnConfig), err)
		}
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	// pgx sets its own default when the URL has no pool_max_conns.
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "tunnel-gateway"
	}
	return cfg, nil
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, url string, opts Options) (*Store, error) {
	if url == "" {
		return nil, errors.New("open PostgreSQL store: empty URL")
	}
	cfg, err := poolConfig(url, opts)
	if err != nil {
		return nil, err
	}
	where := describe(cfg.ConnConfig)
	listenCfg := cfg.ConnConfig.Copy()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL store %s: %w", where, classify(ctx, err))
	}
	s := &Store{pool: pool, connCfg: listenCfg, origin: opts.Origin}
	s.listenCtx, s.listenStop = context.WithCancel(context.Background())
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL store %s: %w", where, err)
	}
	return s, nil
}

// parseError says why url cannot be used, without its password: pgx
// redacts passwords from its parse errors only on a best-effort basis, and
// Go's URL errors quote the URL whole.
func parseError(rawURL string, err error) error {
	const want = "want postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=/path/to/ca.pem"
	u, uerr := neturl.Parse(rawURL)
	if uerr != nil {
		return fmt.Errorf("open PostgreSQL store: the store URL is malformed (%s)", want)
	}
	msg := err.Error()
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
		msg = strings.ReplaceAll(msg, neturl.QueryEscape(pw), "xxxxx")
		msg = strings.ReplaceAll(msg, neturl.PathEscape(pw), "xxxxx")
	}
	if pw := u.Query().Get("password"); pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return fmt.Errorf("open PostgreSQL store: %s", msg)
}

// describe names the database cfg connects to, without credentials, for
// error messages: "app@127.0.0.1:5432/app".
func describe(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s/%s", cfg.User, net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), cfg.Database)
}

// checkTLS refuses a configuration that could talk to a host other than
// loopback or a unix socket in plaintext or without verifying the server's
// certificate. pgx turns sslmode into one TLS configuration per attempt
// (the main one and the fallbacks): nil is plaintext, and
// InsecureSkipVerify without a VerifyPeerCertificate of pgx's own
// (verify-ca) checks nothing.
func checkTLS(cfg *pgx.ConnConfig) error {
	attempts := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
	for _, a := range attempts {
		if isLocal(a.Host) {
			continue
		}
		var problem string
		switch tc := a.TLSConfig; {
		case tc == nil:
			problem = "in plaintext"
		case tc.InsecureSkipVerify && tc.VerifyPeerCertificate == nil:
			problem = "over TLS without verifying the server's certificate"
		default:
			continue
		}
		return fmt.Errorf("the URL lets the gateway talk to PostgreSQL at %s %s: add sslmode=verify-full&sslrootcert=/path/to/ca.pem to it (the network between the gateway and its database is not trusted)",
			net.JoinHostPort(a.Host, fmt.Sprint(a.Port)), problem)
	}
	return nil
}

// isLocal reports whether host is a unix socket directory or a loopback
// address, where TLS adds nothing.
func isLocal(host string) bool {
	if strings.HasPrefix(host, "/") || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close closes every connection of the pool. It is safe to call more than
// once; calls made after it fail.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.listenStop != nil {
			s.listenStop()
		}
		s.listenWG.Wait()
		s.changes.Close()
		s.pool.Close()
	})
	return nil
}

// querier is what single-statement reads need: the pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// read runs fn, whose statements must only read (or be safe to repeat),
// against the pool, again after a transient failure or a lost connection.
func (s *Store) read(ctx context.Context, fn func(q querier) error) error {
	return s.retry(ctx, func() (error, bool) {
		err := fn(s.pool)
		return err, true
	})
}

// write runs fn in a READ COMMITTED transaction and commits it if fn
// returns nil. The whole transaction runs again after a transient failure,
// or a lost connection before COMMIT was sent; fn must therefore set its
// results afresh each time it runs.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return s.retry(ctx, func() (error, bool) {
		// READ COMMITTED whatever the database's default: each statement
		// sees what committed before it, which the read-then-write steps
		// under the audit head lock rely on.
		tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
		if err != nil {
			return err, true
		}
		if err := fn(tx); err != nil {
			// The rollback must reach the server even if ctx is done, or
			// the connection goes back to the pool mid-transaction (pgx
			// closes it then, which is also fine).
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = tx.Rollback(rctx)
			cancel()
			return err, true
		}
		return tx.Commit(ctx), false
	})
}

// retry runs attempt until it succeeds, fails for good or MaxAttempts runs
// have failed. attempt reports whether a lost connection is safe to retry
// (nothing can have been committed). The error returned is classified.
func (s *Store) retry(ctx context.Context, attempt func() (err error, beforeCommit bool)) error {
	backoff := 10 * time.Millisecond
	for n := 1; ; n++ {
		err, beforeCommit := attempt()
		if err == nil {
			return nil
		}
		if n == MaxAttempts || !retryable(ctx, err, beforeCommit) {
			return store.NoteUnavailable(ctx, classify(ctx, err))
		}
		var ce *pgconn.ConnectError
		if s.pool != nil && connectionLost(ctx, err) && !errors.As(err, &ce) {
			// A connection broke: the server most likely restarted, and
			// the pool's idle connections are as dead as this one. Drop
			// them, so that the next attempt connects afresh instead of
			// finding the next dead one.
			s.pool.Reset()
		}
		// Jitter spreads out the gateways that collided.
		d := backoff/2 + rand.N(backoff)
		backoff *= 2
		select {
		case <-ctx.Done():
			return store.NoteUnavailable(ctx, classify(ctx, err))
		case <-time.After(d):
		}
	}
}

// Describe names the database a store URL points at, without its password
// or parameters, for messages: "postgres://tunnel@db.internal:5432/tunnel".
// A URL that does not parse is described as "the PostgreSQL store".
func Describe(rawURL string) string {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return "the PostgreSQL store"
	}
	return "postgres://" + describe(cfg)
}
