package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// AddNetworkRule records r (its ID is ignored) and appends ev, in one
// transaction, and returns r with its ID and CreatedAt as stored. IDs come
// from an identity column: they grow and are never reused. r must pass
// store.CheckNetworkRule; the same effect, CIDR and listener twice gives
// an error wrapping store.ErrExists. The change is notified to every
// gateway (store.ChangeNetwork) in the same transaction.
func (s *Store) AddNetworkRule(ctx context.Context, r store.NetworkRule, ev audit.Event) (store.NetworkRule, error) {
	if err := store.CheckNetworkRule(r); err != nil {
		return store.NetworkRule{}, fmt.Errorf("add network rule: %w", err)
	}
	r.CreatedAt = audit.Normalize(r.CreatedAt)
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		err := tx.QueryRow(ctx, `INSERT INTO network_rules (effect, cidr, listener, comment, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (effect, cidr, listener) DO NOTHING RETURNING id`,
			string(r.Effect), r.CIDR, r.Listener, r.Comment, r.CreatedBy, r.CreatedAt).Scan(&r.ID)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeNetwork, strconv.FormatInt(r.ID, 10), ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return store.NetworkRule{}, fmt.Errorf("add network rule %s %s on %s: %w", r.Effect, r.CIDR, r.Listener, err)
	}
	return r, nil
}

// ListNetworkRules returns every rule, by ID.
func (s *Store) ListNetworkRules(ctx context.Context) ([]store.NetworkRule, error) {
	var rules []store.NetworkRule
	err := s.read(ctx, func(db querier) error {
		rules = nil
		rows, err := db.Query(ctx, `SELECT id, effect, cidr, listener, comment, created_by, created_at
			FROM network_rules ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				r       store.NetworkRule
				effect  string
				created time.Time
			)
			if err := rows.Scan(&r.ID, &effect, &r.CIDR, &r.Listener, &r.Comment, &r.CreatedBy, &created); err != nil {
				return err
			}
			r.Effect, r.CreatedAt = store.Effect(effect), utc(created)
			rules = append(rules, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list network rules: %w", err)
	}
	return rules, nil
}

// DeleteNetworkRule removes the rule with this ID and appends ev, in one
// transaction. An unknown ID gives an error wrapping store.ErrNotFound.
func (s *Store) DeleteNetworkRule(ctx context.Context, id int64, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `DELETE FROM network_rules WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if err := s.notify(ctx, tx, store.ChangeNetwork, strconv.FormatInt(id, 10), ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete network rule %d: %w", id, err)
	}
	return nil
}
