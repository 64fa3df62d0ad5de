package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// migrationFiles holds the schema migrations, migrations/NNNN_name.sql,
// numbered from 1 without gaps. A shipped migration never changes; a schema
// change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order.
var migrations = sync.OnceValues(func() ([]migration, error) {
	return loadMigrations(migrationFiles)
})

func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries { // ReadDir sorts by name
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 || path.Ext(e.Name()) != ".sql" {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", e.Name())
		}
		if v != len(ms)+1 {
			return nil, fmt.Errorf("migration %s: want version %d", e.Name(), len(ms)+1)
		}
		b, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations")
	}
	return ms, nil
}

// SchemaVersion is the schema version this binary writes: the number of
// its migrations.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err) // the embedded files are wrong: caught by the tests
	}
	return len(ms)
}

// migrateLockKey is the pg_advisory_xact_lock key that serialises
// migrations ("tunnel m" in ASCII); every gateway of every version uses it.
const migrateLockKey int64 = 0x74756e6e656c206d

// migrate brings the schema up to date, one transaction per migration, and
// refuses a schema newer than this binary's.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for {
		done, err := s.migrateStep(ctx, ms)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateStep applies the first migration the database lacks, in one
// transaction that holds the migration lock from its start, so that of
// several gateways opening the same database at once one applies it and the
// others, once they get the lock, find it applied. It reports whether the
// schema is up to date (and nothing was applied).
func (s *Store) migrateStep(ctx context.Context, ms []migration) (done bool, err error) {
	err = s.write(ctx, func(tx pgx.Tx) error {
		done = false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return err
		}
		// Under the lock, so that two first gateways do not race to
		// create it.
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
			return err
		}
		switch {
		case v > len(ms):
			return fmt.Errorf("database schema version %d is newer than this gateway (%d): upgrade tunnel-gateway", v, len(ms))
		case v == len(ms):
			done = true
			return nil
		}
		m := ms[v]
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migrate to version %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, m.version); err != nil {
			return fmt.Errorf("migrate to version %d (%s): %w", m.version, m.name, err)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	return done, nil
}
