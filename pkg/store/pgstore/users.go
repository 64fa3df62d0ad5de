package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// userColumns are the columns scanUser reads, from "users u"; the roles come
// in the same statement, so they are of the same snapshot.
const userColumns = `u.name, u.password_hash, u.totp_secret, u.totp_last_step, u.locked, u.created_at,
	ARRAY(SELECT r.role_name FROM user_roles r WHERE r.user_name = u.name ORDER BY r.role_name)`

func scanUser(row pgx.Row) (store.User, error) {
	var (
		u       store.User
		created time.Time
	)
	if err := row.Scan(&u.Name, &u.PasswordHash, &u.TOTPSecret, &u.TOTPLastStep, &u.Locked, &created, &u.Roles); err != nil {
		return store.User{}, err
	}
	u.CreatedAt, u.Roles = utc(created), unlist(u.Roles)
	return u, nil
}

// CreateUser creates u with its roles and appends ev. It returns an error
// wrapping store.ErrExists if the name is taken, and store.ErrNotFound
// (naming the role) if one of u.Roles does not exist.
func (s *Store) CreateUser(ctx context.Context, u store.User, ev audit.Event) error {
	if u.Name == "" {
		return fmt.Errorf("create user: empty name")
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `INSERT INTO users (name, password_hash, totp_secret, totp_last_step, locked, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING`,
			u.Name, u.PasswordHash, u.TOTPSecret, u.TOTPLastStep, u.Locked, ts(u.CreatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		if err := insertUserRoles(ctx, tx, u.Name, u.Roles); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	return nil
}

// insertUserRoles gives the user name the roles, each of which must exist.
func insertUserRoles(ctx context.Context, tx pgx.Tx, name string, roles []string) error {
	roles = slices.Compact(slices.Sorted(slices.Values(roles)))
	if len(roles) == 0 {
		return nil
	}
	// One statement: the roles that exist are granted, and the first that
	// does not is named.
	var missing *string
	if err := tx.QueryRow(ctx, `SELECT r FROM unnest($1::text[]) AS r
		WHERE NOT EXISTS (SELECT 1 FROM roles WHERE name = r) ORDER BY r COLLATE "C" LIMIT 1`, roles).Scan(&missing); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if missing != nil {
		return fmt.Errorf("role %s: %w", *missing, store.ErrNotFound)
	}
	_, err := tx.Exec(ctx, `INSERT INTO user_roles (user_name, role_name) SELECT $1, r FROM unnest($2::text[]) AS r`, name, roles)
	if isForeignKey(err) {
		// Not reached while the check above runs under the audit head
		// lock (DeleteRole takes it too); the foreign key is the schema's
		// own guard.
		return fmt.Errorf("a role was deleted meanwhile: %w", store.ErrNotFound)
	}
	return err
}

// GetUser returns the user called name, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, name string) (store.User, error) {
	var u store.User
	err := s.read(ctx, func(db querier) error {
		var err error
		u, err = scanUser(db.QueryRow(ctx, `SELECT `+userColumns+` FROM users u WHERE u.name = $1`, name))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.User{}, fmt.Errorf("get user %s: %w", name, err)
	}
	return u, nil
}

// ListUsers returns every user, sorted by name.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	var users []store.User
	err := s.read(ctx, func(db querier) error {
		users = nil
		rows, err := db.Query(ctx, `SELECT `+userColumns+` FROM users u ORDER BY u.name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				return err
			}
			users = append(users, u)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// DeleteUser deletes the user called name (and its role grants) and appends
// ev. Its login-failure counter is kept.
func (s *Store) DeleteUser(ctx context.Context, name string, ev audit.Event) error {
	return s.updateUser(ctx, "delete user", name, ev, `DELETE FROM users WHERE name = $1`, name)
}

// SetUserLocked sets or clears the administrative lock of the user called
// name and appends ev.
func (s *Store) SetUserLocked(ctx context.Context, name string, locked bool, ev audit.Event) error {
	op := "unlock user"
	if locked {
		op = "lock user"
	}
	return s.updateUser(ctx, op, name, ev, `UPDATE users SET locked = $2 WHERE name = $1`, name, locked)
}

// ResetMFA installs a new sealed TOTP secret, resets the last accepted step
// to 0 and appends ev.
func (s *Store) ResetMFA(ctx context.Context, name string, sealedSecret []byte, ev audit.Event) error {
	return s.updateUser(ctx, "reset MFA of user", name, ev,
		`UPDATE users SET totp_secret = $2, totp_last_step = 0 WHERE name = $1`, name, sealedSecret)
}

// SetPasswordHash replaces the password hash of the user called name and
// appends ev.
func (s *Store) SetPasswordHash(ctx context.Context, name, hash string, ev audit.Event) error {
	return s.updateUser(ctx, "set password of user", name, ev,
		`UPDATE users SET password_hash = $2 WHERE name = $1`, name, hash)
}

// updateUser runs query, which must change the one row of the user called
// name, and appends ev, in one transaction.
func (s *Store) updateUser(ctx context.Context, op, name string, ev audit.Event, query string, args ...any) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, query, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if err := s.notify(ctx, tx, store.ChangeUser, name, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	return nil
}

// AcceptTOTPStep records step as the user's last accepted TOTP step if and
// only if it is greater than the stored one, in one conditional UPDATE, so
// that of several concurrent logins with the same code, on any gateways,
// exactly one wins. It returns false for a replay and an error wrapping
// store.ErrNotFound for an unknown user.
func (s *Store) AcceptTOTPStep(ctx context.Context, name string, step int64) (bool, error) {
	var accepted, exists bool
	err := s.write(ctx, func(tx pgx.Tx) error {
		// One statement says both whether the step was taken and whether
		// the user exists.
		return tx.QueryRow(ctx, `WITH accepted AS (
				UPDATE users SET totp_last_step = $2 WHERE name = $1 AND totp_last_step < $2 RETURNING 1
			)
			SELECT EXISTS (SELECT 1 FROM accepted), EXISTS (SELECT 1 FROM users WHERE name = $1)`,
			name, step).Scan(&accepted, &exists)
	})
	if err != nil {
		return false, fmt.Errorf("accept TOTP step of user %s: %w", name, err)
	}
	if !accepted && !exists {
		return false, fmt.Errorf("accept TOTP step of user %s: %w", name, store.ErrNotFound)
	}
	return accepted, nil
}

// SetUserRoles replaces the roles of the user name and appends ev. An
// unknown user or role gives an error wrapping store.ErrNotFound that names
// it; then nothing changes.
func (s *Store) SetUserRoles(ctx context.Context, name string, roles []string, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)`, name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("user %s: %w", name, store.ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM user_roles WHERE user_name = $1`, name); err != nil {
			return err
		}
		if err := insertUserRoles(ctx, tx, name, roles); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeUser, name, ""); err != nil {
			return err
		}
		_, err := log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("set roles of %s: %w", name, err)
	}
	return nil
}
