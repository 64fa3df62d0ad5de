package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.SealedStore = (*Store)(nil)

// refPrefix marks a CA key held elsewhere (certs.RefPrefix).
const refPrefix = "ref:"

// SealedRefs implements store.SealedStore.
func (s *Store) SealedRefs(ctx context.Context) ([]store.SealedRef, error) {
	var refs []store.SealedRef
	err := s.read(ctx, func(tx *sql.Tx) error {
		refs = nil
		rows, err := tx.QueryContext(ctx, `SELECT id, kind, substr(sealed_private, 1, 4) FROM ca_keys ORDER BY id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var kind string
			var head []byte
			if err := rows.Scan(&id, &kind, &head); err != nil {
				rows.Close()
				return err
			}
			if strings.HasPrefix(string(head), refPrefix) {
				continue
			}
			refs = append(refs, store.SealedRef{Kind: store.SealedCAKey, Key: strconv.FormatInt(id, 10), Label: "ca/" + kind})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, q := range []struct{ kind, sql, label string }{
			{store.SealedTOTP, `SELECT name FROM users WHERE totp_secret IS NOT NULL AND length(totp_secret) > 0 ORDER BY name`, "totp/"},
			{store.SealedRecording, `SELECT session_id FROM recordings ORDER BY session_id`, "recording/"},
		} {
			rows, err := tx.QueryContext(ctx, q.sql)
			if err != nil {
				return err
			}
			for rows.Next() {
				var key string
				if err := rows.Scan(&key); err != nil {
					rows.Close()
					return err
				}
				refs = append(refs, store.SealedRef{Kind: q.kind, Key: key, Label: q.label + key})
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

// sealedColumn returns the table, value column and key column of a kind.
func sealedColumn(kind string) (table, col, key string, err error) {
	switch kind {
	case store.SealedCAKey:
		return "ca_keys", "sealed_private", "id", nil
	case store.SealedTOTP:
		return "users", "totp_secret", "name", nil
	case store.SealedRecording:
		return "recordings", "data", "session_id", nil
	}
	return "", "", "", fmt.Errorf("unknown kind of sealed value %q", kind)
}

// GetSealed implements store.SealedStore.
func (s *Store) GetSealed(ctx context.Context, ref store.SealedRef) ([]byte, error) {
	table, col, key, err := sealedColumn(ref.Kind)
	if err != nil {
		return nil, err
	}
	var v []byte
	err = s.db.QueryRowContext(ctx, `SELECT `+col+` FROM `+table+` WHERE `+key+` = ?`, ref.Key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sealed %s %s: %w", ref.Kind, ref.Key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read sealed %s %s: %w", ref.Kind, ref.Key, err)
	}
	return v, nil
}

// ReplaceSealed implements store.SealedStore.
func (s *Store) ReplaceSealed(ctx context.Context, ref store.SealedRef, old, sealed []byte) error {
	table, col, key, err := sealedColumn(ref.Kind)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		var cur []byte
		err := tx.QueryRowContext(ctx, `SELECT `+col+` FROM `+table+` WHERE `+key+` = ?`, ref.Key).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(cur, old) {
			return store.ErrChanged
		}
		if ref.Kind == store.SealedRecording {
			_, err = tx.ExecContext(ctx, `UPDATE recordings SET data = ?, size = ? WHERE session_id = ?`, sealed, len(sealed), ref.Key)
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE `+table+` SET `+col+` = ? WHERE `+key+` = ?`, sealed, ref.Key)
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
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if backend == "" {
			_, err = tx.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, store.KeyBackendMeta)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
				ON CONFLICT (key) DO UPDATE SET value = excluded.value`, store.KeyBackendMeta, backend)
		}
		if err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("set the key backend: %w", err)
	}
	return nil
}
