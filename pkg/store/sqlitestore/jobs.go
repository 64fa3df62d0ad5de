package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.JobClaimer = (*Store)(nil)

// ClaimJob implements store.JobClaimer in one write transaction (SQLite
// has one writer at a time, across processes too).
func (s *Store) ClaimJob(ctx context.Context, job, owner string, now time.Time, every time.Duration) (bool, error) {
	claimed := false
	err := s.write(ctx, func(tx *sql.Tx) error {
		claimed = false
		var last int64
		err := tx.QueryRowContext(ctx, `SELECT last_run FROM jobs WHERE name = ?`, job).Scan(&last)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO jobs (name, owner, last_run) VALUES (?, ?, ?)`, job, owner, now.UnixMicro())
			claimed = err == nil
			return err
		case err != nil:
			return err
		}
		if now.Sub(time.UnixMicro(last)) < every {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET owner = ?, last_run = ? WHERE name = ?`, owner, now.UnixMicro(), job)
		claimed = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("claim job %s: %w", job, err)
	}
	return claimed, nil
}
