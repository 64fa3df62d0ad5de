package pgstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// GetMeta returns the cluster metadata value for key, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.read(ctx, func(db querier) error {
		return db.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("get meta %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("get meta %s: %w", key, err)
	}
	return v, nil
}

// Initialize records the cluster's metadata and CA keys and appends ev, in
// one transaction. meta must not be empty: a store with metadata is an
// initialised one, and a second call (from this gateway or another) returns
// an error wrapping store.ErrExists.
func (s *Store) Initialize(ctx context.Context, meta map[string]string, keys []store.CAKey, ev audit.Event) error {
	if len(meta) == 0 {
		return errors.New("initialize store: no cluster metadata")
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		// The audit head lock orders concurrent Initialize calls: the
		// second sees what the first committed.
		var done bool
		if err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM meta) OR EXISTS (SELECT 1 FROM ca_keys)`).Scan(&done); err != nil {
			return err
		}
		if done {
			return fmt.Errorf("store already initialised: %w", store.ErrExists)
		}
		b := &pgx.Batch{}
		for _, k := range slices.Sorted(maps.Keys(meta)) {
			b.Queue(`INSERT INTO meta (key, value) VALUES ($1, $2)`, k, meta[k])
		}
		for _, k := range keys {
			b.Queue(`INSERT INTO ca_keys (kind, public, sealed_private, created_at, active) VALUES ($1, $2, $3, $4, $5)`,
				k.Kind, k.Public, k.SealedPrivate, ts(k.CreatedAt), k.Active)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("metadata and CA keys: %w", err)
		}
		_, err := log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("initialize store: %w", err)
	}
	return nil
}

// CAKeys returns every CA key, active or not, in the order they were
// recorded.
func (s *Store) CAKeys(ctx context.Context) ([]store.CAKey, error) {
	var keys []store.CAKey
	err := s.read(ctx, func(db querier) error {
		keys = nil
		rows, err := db.Query(ctx, `SELECT kind, public, sealed_private, created_at, active FROM ca_keys ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k       store.CAKey
				created time.Time
			)
			if err := rows.Scan(&k.Kind, &k.Public, &k.SealedPrivate, &created, &k.Active); err != nil {
				return err
			}
			k.CreatedAt = utc(created)
			keys = append(keys, k)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list CA keys: %w", err)
	}
	return keys, nil
}
