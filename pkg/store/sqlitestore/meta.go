package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// GetMeta returns the cluster metadata value for key, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("get meta %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("get meta %s: %w", key, err)
	}
	return v, nil
}

// Initialize records the cluster's metadata and CA keys and appends ev, in
// one transaction. meta must not be empty: a store with metadata is an
// initialised one, and a second call returns an error wrapping
// store.ErrExists.
func (s *Store) Initialize(ctx context.Context, meta map[string]string, keys []store.CAKey, ev audit.Event) error {
	if len(meta) == 0 {
		return errors.New("initialize store: no cluster metadata")
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var done bool
		if err := tx.QueryRowContext(ctx,
			`SELECT EXISTS (SELECT 1 FROM meta) OR EXISTS (SELECT 1 FROM ca_keys)`).Scan(&done); err != nil {
			return err
		}
		if done {
			return fmt.Errorf("store already initialised: %w", store.ErrExists)
		}
		for _, k := range slices.Sorted(maps.Keys(meta)) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, k, meta[k]); err != nil {
				return fmt.Errorf("meta %s: %w", k, err)
			}
		}
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO ca_keys (kind, public, sealed_private, created_at, active)
				VALUES (?, ?, ?, ?, ?)`, k.Kind, k.Public, k.SealedPrivate, micros(k.CreatedAt), k.Active); err != nil {
				return fmt.Errorf("CA key %s: %w", k.Kind, err)
			}
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("initialize store: %w", err)
	}
	return nil
}

// CAKeys returns every CA key, active or not, in the order they were
// recorded.
func (s *Store) CAKeys(ctx context.Context) ([]store.CAKey, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT kind, public, sealed_private, created_at, active FROM ca_keys ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list CA keys: %w", err)
	}
	defer rows.Close()
	var keys []store.CAKey
	for rows.Next() {
		var (
			k       store.CAKey
			created int64
		)
		if err := rows.Scan(&k.Kind, &k.Public, &k.SealedPrivate, &created, &k.Active); err != nil {
			return nil, fmt.Errorf("list CA keys: %w", err)
		}
		k.CreatedAt = fromMicros(created)
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list CA keys: %w", err)
	}
	return keys, nil
}
