package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// AddNetworkRule records r (its ID is ignored) and appends ev, in one
// transaction, and returns r with its ID and CreatedAt as stored. IDs grow
// and are never reused (AUTOINCREMENT). r must pass
// store.CheckNetworkRule; the same effect, CIDR and listener twice gives
// an error wrapping store.ErrExists.
func (s *Store) AddNetworkRule(ctx context.Context, r store.NetworkRule, ev audit.Event) (store.NetworkRule, error) {
	if err := store.CheckNetworkRule(r); err != nil {
		return store.NetworkRule{}, fmt.Errorf("add network rule: %w", err)
	}
	r.CreatedAt = audit.Normalize(r.CreatedAt)
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO network_rules (effect, cidr, listener, comment, created_by, created_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			string(r.Effect), r.CIDR, r.Listener, r.Comment, r.CreatedBy, micros(r.CreatedAt)).Scan(&r.ID)
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return store.NetworkRule{}, fmt.Errorf("add network rule %s %s on %s: %w", r.Effect, r.CIDR, r.Listener, err)
	}
	s.emit(store.ChangeNetwork, strconv.FormatInt(r.ID, 10), "")
	return r, nil
}

// ListNetworkRules returns every rule, by ID.
func (s *Store) ListNetworkRules(ctx context.Context) ([]store.NetworkRule, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, effect, cidr, listener, comment, created_by, created_at
		FROM network_rules ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list network rules: %w", err)
	}
	defer rows.Close()
	var rules []store.NetworkRule
	for rows.Next() {
		var (
			r       store.NetworkRule
			effect  string
			created int64
		)
		if err := rows.Scan(&r.ID, &effect, &r.CIDR, &r.Listener, &r.Comment, &r.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("list network rules: %w", err)
		}
		r.Effect, r.CreatedAt = store.Effect(effect), fromMicros(created)
		rules = append(rules, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list network rules: %w", err)
	}
	return rules, nil
}

// DeleteNetworkRule removes the rule with this ID and appends ev, in one
// transaction. An unknown ID gives an error wrapping store.ErrNotFound.
func (s *Store) DeleteNetworkRule(ctx context.Context, id int64, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM network_rules WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("delete network rule %d: %w", id, err)
	}
	s.emit(store.ChangeNetwork, strconv.FormatInt(id, 10), "")
	return nil
}
