package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.JobClaimer = (*Store)(nil)

// ClaimJob implements store.JobClaimer with one INSERT ... ON CONFLICT DO
// UPDATE ... WHERE: the row lock it takes makes concurrent claims of the
// same period wait for each other, and the second sees the first's run.
func (s *Store) ClaimJob(ctx context.Context, job, owner string, now time.Time, every time.Duration) (bool, error) {
	claimed := false
	err := s.write(ctx, func(tx pgx.Tx) error {
		var name string
		err := tx.QueryRow(ctx, `INSERT INTO jobs (name, owner, last_run) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, last_run = excluded.last_run
			WHERE jobs.last_run <= $4
			RETURNING name`, job, owner, now, now.Add(-every)).Scan(&name)
		if errors.Is(err, pgx.ErrNoRows) {
			claimed = false
			return nil
		}
		claimed = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("claim job %s: %w", job, err)
	}
	return claimed, nil
}
