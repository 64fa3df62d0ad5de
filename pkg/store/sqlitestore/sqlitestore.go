// Package sqlitestore is the embedded, default implementation of
// [store.Store]: the gateway's whole state in one SQLite file, through the
// pure-Go modernc.org/sqlite driver (no cgo).
//
// Use [Open] with a path inside the gateway's data directory and hand the
// result to whatever wants a [store.Store]:
//
//	st, err := sqlitestore.Open(ctx, filepath.Join(dataDir, "gateway.db"))
//	if err != nil {
//		return err
//	}
//	defer st.Close()
//
// Open creates the file with mode 0600 if it does not exist (SQLite gives
// the -wal and -shm files beside it the same mode), turns on WAL mode,
// foreign keys and a 10 s busy timeout, and applies any schema migrations the
// file lacks, each in its own transaction. A file whose schema is newer than
// this binary knows is refused rather than guessed at.
//
// Write transactions begin IMMEDIATE, so they take SQLite's write lock at
// once and queue behind one another instead of failing when a read upgrades
// to a write. That is what makes each method's read-then-write (the audit
// chain, the login-failure counter) atomic. A PostgreSQL implementation needs
// row locks (SELECT ... FOR UPDATE) or serialisable transactions for the
// same effect.
//
// How values are kept, so that the PostgreSQL schema can match: times are
// INTEGER unix microseconds in UTC (NULL for a zero optional time) and come
// back in UTC; durations are INTEGER nanoseconds; Role.Logins, Role.Nodes,
// Role.Services and IssuedCert.Principals are JSON arrays kept in the order
// given; a user's roles live in the user_roles table and come back sorted
// by name, without duplicates; empty lists and maps come back nil.
package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// BusyTimeout is how long a statement waits for another connection's lock
// before it fails with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// Store is a [store.Store] kept in one SQLite database file. It is safe for
// concurrent use, also by several processes sharing the file.
type Store struct {
	db *sql.DB
	// origin is the gateway id carried by the changes this store emits;
	// changes go to Watch's watchers in this process only.
	origin  string
	changes store.Broker
	audit   *auditStmts

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Sync says when a commit reaches the disk.
type Sync int

const (
	// SyncNormal (the default) commits to the write-ahead log without an
	// fsync per commit: a committed change survives a crash of the gateway
	// process (SIGKILL included) and the log stays consistent, but a power
	// loss or kernel crash may lose the last commits. This takes the disk
	// sync (0.5 ms and more) off the path of every stream decision.
	SyncNormal Sync = iota
	// SyncFull fsyncs the write-ahead log on every commit.
	SyncFull
)

// MaxConns is the most connections a Store opens to its database at once;
// further calls wait for one (or for their context to end).
const MaxConns = 8

// Options tune Open. The zero value is the default.
type Options struct {
	Sync Sync
	// Origin is the id of the gateway using the store, carried by the
	// changes it emits (store.Change.Origin).
	Origin string
}

// Open opens the SQLite database at path, creating it (mode 0600) if needed,
// and brings its schema up to date, with the default options.
func Open(ctx context.Context, path string) (*Store, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open sqlite store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	if err := createFile(abs); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	db, err := sql.Open("sqlite", dsn(abs, opts))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	// A bounded pool: every connection holds descriptors on the database
	// and its WAL, and SQLite keeps a closed connection's descriptor while
	// another connection of the process holds a lock on the file, so an
	// unbounded pool grows with the peak of concurrent calls (a flood of
	// streams) and never gives it back. Writers are serialised by SQLite
	// anyway; a few connections serve concurrent readers in WAL mode.
	db.SetMaxOpenConns(MaxConns)
	db.SetMaxIdleConns(MaxConns)
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	// SQLite creates the -wal and -shm files with the database file's mode
	// already; this makes sure of it whatever the umask or an older file.
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(abs+suffix, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
		}
	}
	return &Store{db: db, origin: opts.Origin, audit: prepareAudit(ctx, db)}, nil
}

// createFile creates the database file with mode 0600 (whatever the umask)
// unless it exists; an existing file keeps the mode it has.
func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dsn returns the modernc.org/sqlite data source name for the file at the
// absolute path abs.
func dsn(abs string, opts Options) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	if opts.Sync == SyncFull {
		q.Add("_pragma", "synchronous(FULL)")
	} else {
		q.Add("_pragma", "synchronous(NORMAL)")
	}
	q.Set("_txlock", "immediate")
	// The path is escaped so that '?', '#' and '%' in it are not read as
	// URI syntax.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.changes.Close()
		s.audit.close()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close sqlite store: %w", err)
		}
	})
	return s.closeErr
}

// write runs fn in a write (IMMEDIATE) transaction and commits it if fn
// returns nil.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// read runs fn in a read-only transaction, so that what it reads with
// several statements is one consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// isConstraint reports whether err is an SQLite constraint violation with
// one of the given extended result codes.
func isConstraint(err error, codes ...int) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range codes {
		if se.Code() == c {
			return true
		}
	}
	return false
}

// isDuplicate reports whether err is a primary key or unique violation.
func isDuplicate(err error) bool {
	return isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE)
}

// mustAffect returns store.ErrNotFound unless res reports a changed row.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// micros is how a time is stored: unix microseconds, UTC.
func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros turns a stored time back into a UTC time.Time.
func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

// nullMicros stores an optional time: NULL for the zero time.
func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(t), Valid: true}
}

// fromNullMicros is the inverse of nullMicros.
func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

// encodeList stores a list of strings as a JSON array ("[]" when empty).
func encodeList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, err := json.Marshal(l)
	if err != nil {
		panic(err) // []string always marshals
	}
	return string(b)
}

// decodeList is the inverse of encodeList; an empty list comes back nil.
func decodeList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("decode list %q: %w", s, err)
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}
