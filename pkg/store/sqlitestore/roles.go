package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

const roleColumns = `name, logins, max_ttl, admin, nodes, services, port_forwarding, agent_forwarding, created_at, approve, sudo, sources`

func scanRole(row scanner) (store.Role, error) {
	var (
		r                       store.Role
		logins, nodes, services string
		approve, sources        string
		maxTTL                  int64
		created                 int64
	)
	if err := row.Scan(&r.Name, &logins, &maxTTL, &r.Admin, &nodes, &services, &r.PortForwarding, &r.AgentForwarding, &created, &approve, &r.Sudo, &sources); err != nil {
		return store.Role{}, err
	}
	for _, l := range []struct {
		what string
		enc  string
		dst  *[]string
	}{{"logins", logins, &r.Logins}, {"nodes", nodes, &r.Nodes}, {"services", services, &r.Services}, {"approve", approve, &r.Approve}, {"sources", sources, &r.Sources}} {
		var err error
		if *l.dst, err = decodeList(l.enc); err != nil {
			return store.Role{}, fmt.Errorf("role %s: %s: %w", r.Name, l.what, err)
		}
	}
	r.MaxTTL, r.CreatedAt = time.Duration(maxTTL), fromMicros(created)
	return r, nil
}

// CreateRole creates r and appends ev. It returns an error wrapping
// store.ErrExists if the name is taken. Logins, Nodes and Services are kept
// in the order given.
func (s *Store) CreateRole(ctx context.Context, r store.Role, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if r.Name == "" {
			return errors.New("empty name")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO roles (`+roleColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Name, encodeList(r.Logins), int64(r.MaxTTL), r.Admin, encodeList(r.Nodes), encodeList(r.Services),
			r.PortForwarding, r.AgentForwarding, micros(r.CreatedAt), encodeList(r.Approve), r.Sudo, encodeList(r.Sources))
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("create role %s: %w", r.Name, err)
	}
	s.emit(store.ChangeRole, r.Name, "")
	return nil
}

// UpdateRole replaces every field of the role r.Name but CreatedAt and
// appends ev. It returns an error wrapping store.ErrNotFound if there is no
// such role.
func (s *Store) UpdateRole(ctx context.Context, r store.Role, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE roles SET logins = ?, max_ttl = ?, admin = ?, nodes = ?, services = ?,
			port_forwarding = ?, agent_forwarding = ?, approve = ?, sudo = ?, sources = ? WHERE name = ?`,
			encodeList(r.Logins), int64(r.MaxTTL), r.Admin, encodeList(r.Nodes), encodeList(r.Services),
			r.PortForwarding, r.AgentForwarding, encodeList(r.Approve), r.Sudo, encodeList(r.Sources), r.Name)
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("update role %s: %w", r.Name, err)
	}
	s.emit(store.ChangeRole, r.Name, "")
	return nil
}

// GetRole returns the role called name, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetRole(ctx context.Context, name string) (store.Role, error) {
	r, err := scanRole(s.db.QueryRowContext(ctx, `SELECT `+roleColumns+` FROM roles WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Role{}, fmt.Errorf("get role %s: %w", name, err)
	}
	return r, nil
}

// ListRoles returns every role, sorted by name.
func (s *Store) ListRoles(ctx context.Context) ([]store.Role, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+roleColumns+` FROM roles ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	defer rows.Close()
	var roles []store.Role
	for rows.Next() {
		r, err := scanRole(rows)
		if err != nil {
			return nil, fmt.Errorf("list roles: %w", err)
		}
		roles = append(roles, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return roles, nil
}

// DeleteRole deletes the role called name and appends ev. While users hold
// the role it returns an error wrapping store.ErrExists that names them.
func (s *Store) DeleteRole(ctx context.Context, name string, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		holders, err := roleHolders(ctx, tx, name)
		if err != nil {
			return err
		}
		if len(holders) > 0 {
			return fmt.Errorf("still held by %s: %w", holders, store.ErrExists)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM roles WHERE name = ?`, name)
		if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY) {
			// Not reached while the check above runs in the same write
			// transaction; the foreign key is the schema's own guard.
			return fmt.Errorf("still held: %w", store.ErrExists)
		}
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("delete role %s: %w", name, err)
	}
	s.emit(store.ChangeRole, name, "")
	return nil
}

// roleHolders describes who holds the role: "user alice", "users alice,
// bob", "users alice, bob, carol and 7 more"; "" for nobody.
func roleHolders(ctx context.Context, tx *sql.Tx, role string) (string, error) {
	const show = 3
	var (
		n     int
		names []string
	)
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user_roles WHERE role_name = ?`, role).Scan(&n); err != nil {
		return "", err
	}
	if n == 0 {
		return "", nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT user_name FROM user_roles WHERE role_name = ? ORDER BY user_name LIMIT ?`, role, show)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return "", err
		}
		names = append(names, u)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	desc := "user " + names[0]
	if n > 1 {
		desc = "users " + strings.Join(names, ", ")
	}
	if n > len(names) {
		desc += fmt.Sprintf(" and %d more", n-len(names))
	}
	return desc, nil
}
