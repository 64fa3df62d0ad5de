package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

const roleColumns = `name, logins, max_ttl, admin, nodes, services, port_forwarding, agent_forwarding, created_at, approve, sudo, sources`

func scanRole(row pgx.Row) (store.Role, error) {
	var (
		r       store.Role
		maxTTL  int64
		created time.Time
	)
	if err := row.Scan(&r.Name, &r.Logins, &maxTTL, &r.Admin, &r.Nodes, &r.Services,
		&r.PortForwarding, &r.AgentForwarding, &created, &r.Approve, &r.Sudo, &r.Sources); err != nil {
		return store.Role{}, err
	}
	r.Logins, r.Nodes, r.Services, r.Approve, r.Sources = unlist(r.Logins), unlist(r.Nodes), unlist(r.Services), unlist(r.Approve), unlist(r.Sources)
	r.MaxTTL, r.CreatedAt = time.Duration(maxTTL), utc(created)
	return r, nil
}

// CreateRole creates r and appends ev. It returns an error wrapping
// store.ErrExists if the name is taken. Logins, Nodes and Services are kept
// in the order given.
func (s *Store) CreateRole(ctx context.Context, r store.Role, ev audit.Event) error {
	if r.Name == "" {
		return errors.New("create role: empty name")
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `INSERT INTO roles (`+roleColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (name) DO NOTHING`,
			r.Name, list(r.Logins), int64(r.MaxTTL), r.Admin, list(r.Nodes), list(r.Services),
			r.PortForwarding, r.AgentForwarding, ts(r.CreatedAt), list(r.Approve), r.Sudo, list(r.Sources))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		if err := s.notify(ctx, tx, store.ChangeRole, r.Name, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("create role %s: %w", r.Name, err)
	}
	return nil
}

// UpdateRole replaces every field of the role r.Name but CreatedAt and
// appends ev. It returns an error wrapping store.ErrNotFound if there is no
// such role.
func (s *Store) UpdateRole(ctx context.Context, r store.Role, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `UPDATE roles SET logins = $2, max_ttl = $3, admin = $4, nodes = $5, services = $6,
			port_forwarding = $7, agent_forwarding = $8, approve = $9, sudo = $10, sources = $11 WHERE name = $1`,
			r.Name, list(r.Logins), int64(r.MaxTTL), r.Admin, list(r.Nodes), list(r.Services),
			r.PortForwarding, r.AgentForwarding, list(r.Approve), r.Sudo, list(r.Sources))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if err := s.notify(ctx, tx, store.ChangeRole, r.Name, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("update role %s: %w", r.Name, err)
	}
	return nil
}

// GetRole returns the role called name, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetRole(ctx context.Context, name string) (store.Role, error) {
	var r store.Role
	err := s.read(ctx, func(db querier) error {
		var err error
		r, err = scanRole(db.QueryRow(ctx, `SELECT `+roleColumns+` FROM roles WHERE name = $1`, name))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Role{}, fmt.Errorf("get role %s: %w", name, err)
	}
	return r, nil
}

// ListRoles returns every role, sorted by name.
func (s *Store) ListRoles(ctx context.Context) ([]store.Role, error) {
	var roles []store.Role
	err := s.read(ctx, func(db querier) error {
		roles = nil
		rows, err := db.Query(ctx, `SELECT `+roleColumns+` FROM roles ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRole(rows)
			if err != nil {
				return err
			}
			roles = append(roles, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return roles, nil
}

// DeleteRole deletes the role called name and appends ev. While users hold
// the role it returns an error wrapping store.ErrExists that names them.
func (s *Store) DeleteRole(ctx context.Context, name string, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		holders, err := roleHolders(ctx, tx, name)
		if err != nil {
			return err
		}
		if holders != "" {
			return fmt.Errorf("still held by %s: %w", holders, store.ErrExists)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM roles WHERE name = $1`, name)
		if isForeignKey(err) {
			// Not reached while the check above runs under the audit head
			// lock; the foreign key is the schema's own guard.
			return fmt.Errorf("still held: %w", store.ErrExists)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if err := s.notify(ctx, tx, store.ChangeRole, name, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete role %s: %w", name, err)
	}
	return nil
}

// roleHolders describes who holds the role: "user alice", "users alice,
// bob", "users alice, bob, carol and 7 more"; "" for nobody.
func roleHolders(ctx context.Context, tx pgx.Tx, role string) (string, error) {
	const show = 3
	var (
		n     int
		names []string
	)
	if err := tx.QueryRow(ctx, `SELECT COUNT(*),
			ARRAY(SELECT user_name FROM user_roles WHERE role_name = $1 ORDER BY user_name LIMIT $2)
		FROM user_roles WHERE role_name = $1`, role, show).Scan(&n, &names); err != nil {
		return "", err
	}
	if n == 0 {
		return "", nil
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
