package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.Snapshotter = (*Store)(nil)

// Snapshot implements store.Snapshotter: VACUUM INTO a private temporary
// file (a consistent copy, taken in one read transaction while writers go
// on), copied to w. The payload is an SQLite database file.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (store.SnapshotInfo, error) {
	info := store.SnapshotInfo{Kind: store.KindSQLite}
	v, err := schemaVersion(ctx, s.db)
	if err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	info.SchemaVersion = v
	dir, err := os.MkdirTemp("", "tunnel-snapshot-")
	if err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "snapshot.db")
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	return info, nil
}

// ErrNotEmpty refuses a restore over an existing database.
var ErrNotEmpty = errors.New("a database is already there")

// Restore writes the snapshot r (made by Snapshot) as the database file at
// path, which must not exist: through a temporary file (0600) that is
// checked (PRAGMA integrity_check, a schema this binary can open) and then
// renamed into place, so a failed restore leaves nothing behind.
func Restore(ctx context.Context, path string, r io.Reader) error {
	for _, p := range []string{path, path + "-wal"} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("restore %s: %w", path, ErrNotEmpty)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore %s: %w", path, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".restore-*.db")
	if err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	name := tmp.Name()
	defer func() {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			os.Remove(name + suffix)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if err := checkRestored(ctx, name); err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if err := os.Link(name, path); err != nil { // fails if path appeared meanwhile
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// checkRestored opens the file as a store (which migrates an older schema
// and refuses a newer one) and checks its integrity.
func checkRestored(ctx context.Context, path string) error {
	st, err := Open(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	var res string
	if err := st.db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil {
		return fmt.Errorf("the snapshot is not an SQLite database: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("the snapshot's database is damaged: %s", res)
	}
	// Fold the write-ahead log back into the file before it is moved.
	if _, err := st.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return err
	}
	return nil
}
