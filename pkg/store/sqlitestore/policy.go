package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// AddPolicyRule records r (its ID is ignored) and appends ev, in one
// transaction, and returns r with its ID and CreatedAt as stored. IDs grow
// and are never reused, not even the ID of the last rule once removed.
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
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO policy_rules (effect, from_agent, to_target, created_by, created_at)
			VALUES (?, ?, ?, ?, ?) RETURNING id`,
			string(r.Effect), r.From, r.To, r.CreatedBy, micros(r.CreatedAt)).Scan(&r.ID)
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return store.PolicyRule{}, fmt.Errorf("add policy rule %s from %s to %s: %w", r.Effect, r.From, r.To, err)
	}
	s.emit(store.ChangePolicy, strconv.FormatInt(r.ID, 10), "")
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
	rows, err := s.db.QueryContext(ctx, `SELECT id, effect, from_agent, to_target, created_by, created_at
		FROM policy_rules ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list policy rules: %w", err)
	}
	defer rows.Close()
	var rules []store.PolicyRule
	for rows.Next() {
		var (
			r       store.PolicyRule
			effect  string
			created int64
		)
		if err := rows.Scan(&r.ID, &effect, &r.From, &r.To, &r.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("list policy rules: %w", err)
		}
		r.Effect, r.CreatedAt = store.Effect(effect), fromMicros(created)
		rules = append(rules, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list policy rules: %w", err)
	}
	return rules, nil
}

// DeletePolicyRule removes the rule with this ID and appends ev, in one
// transaction. An unknown ID gives an error wrapping store.ErrNotFound.
func (s *Store) DeletePolicyRule(ctx context.Context, id int64, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM policy_rules WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("delete policy rule %d: %w", id, err)
	}
	s.emit(store.ChangePolicy, strconv.FormatInt(id, 10), "")
	return nil
}
