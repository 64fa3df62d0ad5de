package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// LoginFailures returns the failure counter of a canonical name; a zero
// counter if there is none. LockedUntil is returned as stored, even when it
// has passed: the caller compares it with its clock.
func (s *Store) LoginFailures(ctx context.Context, name string) (store.LoginFailures, error) {
	var lf store.LoginFailures
	err := s.read(ctx, func(db querier) error {
		var err error
		lf, err = loginFailures(ctx, db, name, "")
		return err
	})
	if err != nil {
		return store.LoginFailures{}, fmt.Errorf("login failures of %s: %w", name, err)
	}
	return lf, nil
}

// loginFailures reads the counter of name; lock is "" or " FOR UPDATE".
func loginFailures(ctx context.Context, db querier, name, lock string) (store.LoginFailures, error) {
	lf := store.LoginFailures{Name: name}
	var until *time.Time
	err := db.QueryRow(ctx, `SELECT count, locked_until FROM login_failures WHERE name = $1`+lock, name).
		Scan(&lf.Count, &until)
	if errors.Is(err, pgx.ErrNoRows) {
		return lf, nil
	}
	if err != nil {
		return store.LoginFailures{}, err
	}
	lf.LockedUntil = fromNull(until)
	return lf, nil
}

// ReserveLoginAttempt counts one attempt for name before its credentials
// are checked, so that however many attempts run at once, on however many
// gateways, at most max are reserved before the lockout begins: the
// transaction makes sure the name's counter row exists (INSERT ... ON
// CONFLICT DO NOTHING) and locks it (SELECT ... FOR UPDATE) before it reads
// and updates it, so concurrent reservations for one name queue on that row.
//
// A name locked out at now gets the counter and store.ErrLockedOut, and
// nothing changes. A lockout that has ended (LockedUntil not after now)
// restarts the counter. The reservation that brings the count to max (max >
// 0) sets LockedUntil to now+lockout; that attempt is still evaluated, and a
// successful login clears the counter (ClearLoginFailures).
func (s *Store) ReserveLoginAttempt(ctx context.Context, name string, now time.Time, max int, lockout time.Duration) (store.LoginFailures, error) {
	var lf store.LoginFailures
	err := s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO login_failures (name, count) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING`, name); err != nil {
			return err
		}
		var err error
		lf, err = loginFailures(ctx, tx, name, " FOR UPDATE")
		if err != nil {
			return err
		}
		if lf.LockedUntil.After(now) {
			return store.ErrLockedOut // rolls back: nothing changes
		}
		if !lf.LockedUntil.IsZero() {
			lf.Count, lf.LockedUntil = 0, time.Time{}
		}
		lf.Count++
		if max > 0 && lf.Count >= max {
			lf.LockedUntil = audit.Normalize(now.Add(lockout))
		}
		// An upsert, not an UPDATE: a ClearLoginFailures may have deleted
		// the row between the INSERT and the lock.
		_, err = tx.Exec(ctx, `INSERT INTO login_failures (name, count, locked_until) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET count = excluded.count, locked_until = excluded.locked_until`,
			name, lf.Count, nullTS(lf.LockedUntil))
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
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE name = $1`, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("clear login failures of %s: %w", name, err)
	}
	return nil
}
