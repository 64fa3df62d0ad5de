package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

const userColumns = `name, password_hash, totp_secret, totp_last_step, locked, created_at`

type scanner interface {
	Scan(dest ...any) error
}

func scanUser(row scanner) (store.User, error) {
	var (
		u       store.User
		created int64
	)
	if err := row.Scan(&u.Name, &u.PasswordHash, &u.TOTPSecret, &u.TOTPLastStep, &u.Locked, &created); err != nil {
		return store.User{}, err
	}
	u.CreatedAt = fromMicros(created)
	return u, nil
}

// CreateUser creates u with its roles and appends ev. It returns an error
// wrapping store.ErrExists if the name is taken, and store.ErrNotFound
// (naming the role) if one of u.Roles does not exist.
func (s *Store) CreateUser(ctx context.Context, u store.User, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if u.Name == "" {
			return errors.New("empty name")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
			u.Name, u.PasswordHash, u.TOTPSecret, u.TOTPLastStep, u.Locked, micros(u.CreatedAt))
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		if err := insertUserRoles(ctx, tx, u.Name, u.Roles); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	return nil
}

// GetUser returns the user called name, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, name string) (store.User, error) {
	var u store.User
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT role_name FROM user_roles WHERE user_name = ? ORDER BY role_name`, name)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				return err
			}
			u.Roles = append(u.Roles, r)
		}
		return rows.Err()
	})
	if err != nil {
		return store.User{}, fmt.Errorf("get user %s: %w", name, err)
	}
	return u, nil
}

// ListUsers returns every user, sorted by name.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	var users []store.User
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		index := map[string]int{}
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				return err
			}
			index[u.Name] = len(users)
			users = append(users, u)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()

		rows, err = tx.QueryContext(ctx, `SELECT user_name, role_name FROM user_roles ORDER BY user_name, role_name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name, role string
			if err := rows.Scan(&name, &role); err != nil {
				return err
			}
			if i, ok := index[name]; ok {
				users[i].Roles = append(users[i].Roles, role)
			}
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
	if err := s.updateUser(ctx, "delete user", name, ev, `DELETE FROM users WHERE name = ?`, name); err != nil {
		return err
	}
	s.emit(store.ChangeUser, name, "")
	return nil
}

// SetUserLocked sets or clears the administrative lock of the user called
// name and appends ev.
func (s *Store) SetUserLocked(ctx context.Context, name string, locked bool, ev audit.Event) error {
	op := "unlock user"
	if locked {
		op = "lock user"
	}
	if err := s.updateUser(ctx, op, name, ev, `UPDATE users SET locked = ? WHERE name = ?`, locked, name); err != nil {
		return err
	}
	s.emit(store.ChangeUser, name, "")
	return nil
}

// ResetMFA installs a new sealed TOTP secret, resets the last accepted step
// to 0 and appends ev.
func (s *Store) ResetMFA(ctx context.Context, name string, sealedSecret []byte, ev audit.Event) error {
	return s.updateUser(ctx, "reset MFA of user", name, ev,
		`UPDATE users SET totp_secret = ?, totp_last_step = 0 WHERE name = ?`, sealedSecret, name)
}

// SetPasswordHash replaces the password hash of the user called name and
// appends ev.
func (s *Store) SetPasswordHash(ctx context.Context, name, hash string, ev audit.Event) error {
	return s.updateUser(ctx, "set password of user", name, ev,
		`UPDATE users SET password_hash = ? WHERE name = ?`, hash, name)
}

// updateUser runs query, which must change the one row of the user called
// name, and appends ev, in one transaction.
func (s *Store) updateUser(ctx context.Context, op, name string, ev audit.Event, query string, args ...any) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	return nil
}

// AcceptTOTPStep records step as the user's last accepted TOTP step if and
// only if it is greater than the stored one, in one conditional UPDATE, so
// that of several concurrent logins with the same code exactly one wins.
// It returns false for a replay and an error wrapping store.ErrNotFound for
// an unknown user.
func (s *Store) AcceptTOTPStep(ctx context.Context, name string, step int64) (bool, error) {
	res, err := s.db.ExecContext(ctx,
		`UPDATE users SET totp_last_step = ? WHERE name = ? AND totp_last_step < ?`, step, name, step)
	if err != nil {
		return false, fmt.Errorf("accept TOTP step of user %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("accept TOTP step of user %s: %w", name, err)
	}
	if n == 1 {
		return true, nil
	}
	// Nothing changed: a replay, or no such user. Which one does not need
	// to be atomic with the UPDATE: the answer is "refused" either way.
	var exists bool
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE name = ?)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("accept TOTP step of user %s: %w", name, err)
	}
	if !exists {
		return false, fmt.Errorf("accept TOTP step of user %s: %w", name, store.ErrNotFound)
	}
	return false, nil
}

// insertUserRoles gives the user name the roles, each of which must exist.
func insertUserRoles(ctx context.Context, tx *sql.Tx, name string, roles []string) error {
	for _, r := range slices.Compact(slices.Sorted(slices.Values(roles))) {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM roles WHERE name = ?)`, r).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("role %s: %w", r, store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_roles (user_name, role_name) VALUES (?, ?)`, name, r); err != nil {
			return fmt.Errorf("role %s: %w", r, err)
		}
	}
	return nil
}

// SetUserRoles replaces the roles of the user name and appends ev. An
// unknown user or role gives an error wrapping store.ErrNotFound that names
// it; then nothing changes.
func (s *Store) SetUserRoles(ctx context.Context, name string, roles []string, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE name = ?)`, name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("user %s: %w", name, store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM user_roles WHERE user_name = ?`, name); err != nil {
			return err
		}
		if err := insertUserRoles(ctx, tx, name, roles); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("set roles of %s: %w", name, err)
	}
	s.emit(store.ChangeUser, name, "")
	return nil
}
