package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// LoginFailures returns the failure counter of a canonical name; a zero
// counter if there is none. LockedUntil is returned as stored, even when it
// has passed: the caller compares it with its clock.
func (s *Store) LoginFailures(ctx context.Context, name string) (store.LoginFailures, error) {
	var lf store.LoginFailures
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		lf, err = loginFailures(ctx, tx, name)
		return err
	})
	if err != nil {
		return store.LoginFailures{}, fmt.Errorf("login failures of %s: %w", name, err)
	}
	return lf, nil
}

func loginFailures(ctx context.Context, tx *sql.Tx, name string) (store.LoginFailures, error) {
	lf := store.LoginFailures{Name: name}
	var until sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT count, locked_until FROM login_failures WHERE name = ?`, name).
		Scan(&lf.Count, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return lf, nil
	}
	if err != nil {
		return store.LoginFailures{}, err
	}
	lf.LockedUntil = fromNullMicros(until)
	return lf, nil
}

// RecordLoginFailure counts one more failed login for name and appends ev,
// in one transaction, and returns the new counter.
//
// If the counter was locked out and the lockout has ended (LockedUntil is
// not after now) it restarts at 1. When the count reaches max (max > 0; a
// max of 0 or less never locks out) LockedUntil becomes now+lockout, so each
// further failure while locked out extends the lockout.
func (s *Store) RecordLoginFailure(ctx context.Context, name string, now time.Time, max int, lockout time.Duration, ev audit.Event) (store.LoginFailures, error) {
	var lf store.LoginFailures
	err := s.write(ctx, func(tx *sql.Tx) error {
		// The write transaction holds SQLite's write lock from its start, so
		// nothing changes the row between this read and the write below.
		var err error
		lf, err = loginFailures(ctx, tx, name)
		if err != nil {
			return err
		}
		if !lf.LockedUntil.IsZero() && !lf.LockedUntil.After(now) {
			lf.Count, lf.LockedUntil = 0, time.Time{}
		}
		lf.Count++
		if max > 0 && lf.Count >= max {
			lf.LockedUntil = audit.Normalize(now.Add(lockout))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_failures (name, count, locked_until) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET count = excluded.count, locked_until = excluded.locked_until`,
			name, lf.Count, nullMicros(lf.LockedUntil)); err != nil {
			return err
		}
		return appendEvents(ctx, tx, ev)
	})
	if err != nil {
		return store.LoginFailures{}, fmt.Errorf("record login failure of %s: %w", name, err)
	}
	return lf, nil
}

// ClearLoginFailures deletes the failure counter of name, after a
// successful login.
func (s *Store) ClearLoginFailures(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM login_failures WHERE name = ?`, name); err != nil {
		return fmt.Errorf("clear login failures of %s: %w", name, err)
	}
	return nil
}
