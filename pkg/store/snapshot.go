package store

import (
	"context"
	"io"
	"time"
)

// Store kinds, as a snapshot names them.
const (
	KindSQLite   = "sqlite"
	KindPostgres = "postgres"
)

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	// Kind is KindSQLite or KindPostgres: a snapshot restores only into a
	// store of its kind.
	Kind string
	// SchemaVersion is the store's schema version (its migrations).
	SchemaVersion int
}

// Snapshotter writes a consistent copy of a whole store while it is in use
// (tunnel-gateway backup). Both stores implement it; callers type-assert.
type Snapshotter interface {
	// Snapshot writes every table as of one instant to w: for SQLite a
	// database file (VACUUM INTO), for PostgreSQL one REPEATABLE READ, READ
	// ONLY transaction's COPY of every table. Restore it with the store
	// package's Restore function.
	Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error)
}

// JobClaimer elects, through the store, one gateway per period to run a
// cluster-wide periodic job (the scheduled backups), however many gateways
// have the same schedule. Both stores implement it; callers type-assert.
type JobClaimer interface {
	// ClaimJob claims the run of job at now for owner if nobody claimed
	// it within every before now (or ever), atomically across the gateways
	// sharing the store, and reports whether the claim succeeded.
	ClaimJob(ctx context.Context, job, owner string, now time.Time, every time.Duration) (bool, error)
}
