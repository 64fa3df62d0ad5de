package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// AddPolicyRule records r (its ID is ignored) and appends ev, in one
// transaction, and returns r with its ID and CreatedAt as stored. IDs come
// from an identity column: they grow and are never reused, not even the ID
// of the last rule once removed (a refused rule may leave a gap).
//
// r.Effect must be store.Allow or store.Deny, r.From an agent name or "*",
// and r.To "node/service" with neither part empty; otherwise it returns a
// plain error. A rule with the same effect, From and To gives an error
// wrapping store.ErrExists.
func (s *Store) AddPolicyRule(ctx context.Context, r store.PolicyRule, ev audit.Event) (store.PolicyRule, error) {
	if err := checkPolicyRule(r); err != nil {
		return store.PolicyRule{}, fmt.Errorf("add policy rule: %w", err)
	}
	r.CreatedAt = audit.Normalize(r.CreatedAt)
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		err := tx.QueryRow(ctx, `INSERT INTO policy_rules (effect, from_agent, to_target, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (effect, from_agent, to_target) DO NOTHING RETURNING id`,
			string(r.Effect), r.From, r.To, r.CreatedBy, r.CreatedAt).Scan(&r.ID)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangePolicy, strconv.FormatInt(r.ID, 10), ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return store.PolicyRule{}, fmt.Errorf("add policy rule %s from %s to %s: %w", r.Effect, r.From, r.To, err)
	}
	return r, nil
}

func checkPolicyRule(r store.PolicyRule) error {
	if r.Effect != store.Allow && r.Effect != store.Deny {
		return fmt.Errorf("effect %q is neither %q nor %q", r.Effect, store.Allow, store.Deny)
	}
	if r.From == "" || strings.Contains(r.From, "/") {
		return fmt.Errorf("from %q is not an agent name or \"*\"", r.From)
	}
	node, service, ok := strings.Cut(r.To, "/")
	if !ok || node == "" || service == "" || strings.Contains(service, "/") {
		return fmt.Errorf("to %q is not node/service (either part may be \"*\")", r.To)
	}
	return nil
}

// ListPolicyRules returns every rule, by ID.
func (s *Store) ListPolicyRules(ctx context.Context) ([]store.PolicyRule, error) {
	var rules []store.PolicyRule
	err := s.read(ctx, func(db querier) error {
		rules = nil
		rows, err := db.Query(ctx, `SELECT id, effect, from_agent, to_target, created_by, created_at
			FROM policy_rules ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				r       store.PolicyRule
				effect  string
				created time.Time
			)
			if err := rows.Scan(&r.ID, &effect, &r.From, &r.To, &r.CreatedBy, &created); err != nil {
				return err
			}
			r.Effect, r.CreatedAt = store.Effect(effect), utc(created)
			rules = append(rules, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list policy rules: %w", err)
	}
	return rules, nil
}

// DeletePolicyRule removes the rule with this ID and appends ev, in one
// transaction. An unknown ID gives an error wrapping store.ErrNotFound.
func (s *Store) DeletePolicyRule(ctx context.Context, id int64, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `DELETE FROM policy_rules WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if err := s.notify(ctx, tx, store.ChangePolicy, strconv.FormatInt(id, 10), ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete policy rule %d: %w", id, err)
	}
	return nil
}
