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

// ReserveLoginAttempt counts one attempt for name before its credentials
// are checked, in one write transaction, so that however many attempts run
// at once at most max are reserved before the lockout begins.
//
// A name locked out at now gets the counter and store.ErrLockedOut, and
// nothing changes. A lockout that has ended (LockedUntil not after now)
// restarts the counter. The reservation that brings the count to max (max >
// 0) sets LockedUntil to now+lockout; that attempt is still evaluated, and a
// successful login clears the counter (ClearLoginFailures).
func (s *Store) ReserveLoginAttempt(ctx context.Context, name string, now time.Time, max int, lockout time.Duration) (store.LoginFailures, error) {
	var lf store.LoginFailures
	err := s.write(ctx, func(tx *sql.Tx) error {
		// The write transaction holds SQLite's write lock from its start, so
		// nothing changes the row between this read and the write below.
		var err error
		lf, err = loginFailures(ctx, tx, name)
		if err != nil {
			return err
		}
		if lf.LockedUntil.After(now) {
			return store.ErrLockedOut
		}
		if !lf.LockedUntil.IsZero() {
			lf.Count, lf.LockedUntil = 0, time.Time{}
		}
		lf.Count++
		if max > 0 && lf.Count >= max {
			lf.LockedUntil = audit.Normalize(now.Add(lockout))
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO login_failures (name, count, locked_until) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET count = excluded.count, locked_until = excluded.locked_until`,
			name, lf.Count, nullMicros(lf.LockedUntil))
		return err
	})
	if errors.Is(err, store.ErrLockedOut) {
		return lf, fmt.Errorf("login attempt for %s: %w", name, err)
	}
	if err != nil {
		return store.LoginFailures{}, fmt.Errorf("reserve a login attempt for %s: %w", name, err)
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
