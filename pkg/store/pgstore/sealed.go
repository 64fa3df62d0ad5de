package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.SealedStore = (*Store)(nil)

// SealedRefs implements store.SealedStore.
func (s *Store) SealedRefs(ctx context.Context) ([]store.SealedRef, error) {
	var refs []store.SealedRef
	err := s.read(ctx, func(q querier) error {
		refs = nil
		rows, err := q.Query(ctx, `SELECT id, kind FROM ca_keys
			WHERE substring(sealed_private from 1 for 4) <> 'ref:'::bytea ORDER BY id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var kind string
			if err := rows.Scan(&id, &kind); err != nil {
				rows.Close()
				return err
			}
			refs = append(refs, store.SealedRef{Kind: store.SealedCAKey, Key: strconv.FormatInt(id, 10), Label: "ca/" + kind})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, k := range []struct{ kind, sql, label string }{
			{store.SealedTOTP, `SELECT name FROM users WHERE totp_secret IS NOT NULL AND length(totp_secret) > 0 ORDER BY name`, "totp/"},
			{store.SealedRecording, `SELECT session_id FROM recordings ORDER BY session_id`, "recording/"},
		} {
			rows, err := q.Query(ctx, k.sql)
			if err != nil {
				return err
			}
			for rows.Next() {
				var key string
				if err := rows.Scan(&key); err != nil {
					rows.Close()
					return err
				}
				refs = append(refs, store.SealedRef{Kind: k.kind, Key: key, Label: k.label + key})
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sealed values: %w", err)
	}
	return refs, nil
}

// sealedQuery returns the select and the update of a kind of sealed value.
func sealedQuery(ref store.SealedRef) (sel, upd string, key any, err error) {
	switch ref.Kind {
	case store.SealedCAKey:
		id, err := strconv.ParseInt(ref.Key, 10, 64)
		if err != nil {
			return "", "", nil, fmt.Errorf("sealed CA key %q: %w", ref.Key, store.ErrNotFound)
		}
		return `SELECT sealed_private FROM ca_keys WHERE id = $1`, `UPDATE ca_keys SET sealed_private = $2 WHERE id = $1`, id, nil
	case store.SealedTOTP:
		return `SELECT totp_secret FROM users WHERE name = $1`, `UPDATE users SET totp_secret = $2 WHERE name = $1`, ref.Key, nil
	case store.SealedRecording:
		return `SELECT data FROM recordings WHERE session_id = $1`, `UPDATE recordings SET data = $2::bytea, size = length($2::bytea) WHERE session_id = $1`, ref.Key, nil
	}
	return "", "", nil, fmt.Errorf("unknown kind of sealed value %q", ref.Kind)
}

// GetSealed implements store.SealedStore.
func (s *Store) GetSealed(ctx context.Context, ref store.SealedRef) ([]byte, error) {
	sel, _, key, err := sealedQuery(ref)
	if err != nil {
		return nil, err
	}
	var v []byte
	err = s.read(ctx, func(q querier) error { return q.QueryRow(ctx, sel, key).Scan(&v) })
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("sealed %s %s: %w", ref.Kind, ref.Key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read sealed %s %s: %w", ref.Kind, ref.Key, err)
	}
	return v, nil
}

// ReplaceSealed implements store.SealedStore.
func (s *Store) ReplaceSealed(ctx context.Context, ref store.SealedRef, old, sealed []byte) error {
	sel, upd, key, err := sealedQuery(ref)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		var cur []byte
		err := tx.QueryRow(ctx, sel+` FOR UPDATE`, key).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(cur, old) {
			return store.ErrChanged
		}
		_, err = tx.Exec(ctx, upd, key, sealed)
		return err
	})
	if err != nil {
		return fmt.Errorf("replace sealed %s %s: %w", ref.Kind, ref.Key, err)
	}
	return nil
}

// SetKeyBackend records where the cluster's keys live and appends ev, in
// one transaction; "" removes the record (a KEK file).
func (s *Store) SetKeyBackend(ctx context.Context, backend string, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var err error
		if backend == "" {
			_, err = tx.Exec(ctx, `DELETE FROM meta WHERE key = $1`, store.KeyBackendMeta)
		} else {
			_, err = tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2)
				ON CONFLICT (key) DO UPDATE SET value = excluded.value`, store.KeyBackendMeta, backend)
		}
		if err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("set the key backend: %w", err)
	}
	return nil
}
