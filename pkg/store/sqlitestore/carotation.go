package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// AddCAKey stores k inactive and appends ev, in one transaction. If an
// inactive key of k.Kind is stored already (a rotation is under way) the
// result wraps store.ErrExists and nothing is stored.
func (s *Store) AddCAKey(ctx context.Context, k store.CAKey, ev audit.Event) error {
	if k.Kind == "" || len(k.Public) == 0 || len(k.SealedPrivate) == 0 {
		return fmt.Errorf("add %q CA key: empty kind, public or private key", k.Kind)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM ca_keys WHERE kind = ? AND active = 0`, k.Kind).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("a rotation of the %s CA is under way: %w", k.Kind, store.ErrExists)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ca_keys (kind, public, sealed_private, created_at, active)
			VALUES (?, ?, ?, ?, 0)`, k.Kind, k.Public, k.SealedPrivate, micros(k.CreatedAt)); err != nil {
			return err
		}
		if err := bumpCAEpoch(ctx, tx, ev.Time); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("add %s CA key: %w", k.Kind, err)
	}
	s.emit(store.ChangeCA, k.Kind, "")
	return nil
}

// ActivateCAKey makes the key of kind with this public part the active one,
// records at under store.CAActivatedMeta(kind) and appends ev, in one
// transaction. An unknown key gives an error wrapping store.ErrNotFound.
func (s *Store) ActivateCAKey(ctx context.Context, kind string, public []byte, at time.Time, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM ca_keys WHERE kind = ? AND public = ?`, kind, public).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ca_keys SET active = (id = ?) WHERE kind = ?`, id, kind); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
			store.CAActivatedMeta(kind), at.UTC().Format(time.RFC3339Nano)); err != nil {
			return err
		}
		if err := bumpCAEpoch(ctx, tx, ev.Time); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("activate %s CA key: %w", kind, err)
	}
	s.emit(store.ChangeCA, kind, "")
	return nil
}

// RemoveCAKey removes the inactive key of kind with this public part and
// appends ev, in one transaction. An unknown key gives an error wrapping
// store.ErrNotFound; the active key is never removed.
func (s *Store) RemoveCAKey(ctx context.Context, kind string, public []byte, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var active bool
		err := tx.QueryRowContext(ctx, `SELECT active FROM ca_keys WHERE kind = ? AND public = ?`, kind, public).Scan(&active)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if active {
			return errors.New("the active key cannot be removed")
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM ca_keys WHERE kind = ? AND public = ? AND active = 0`, kind, public); err != nil {
			return err
		}
		if err := bumpCAEpoch(ctx, tx, ev.Time); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("remove %s CA key: %w", kind, err)
	}
	s.emit(store.ChangeCA, kind, "")
	return nil
}

// LatestCertExpiry returns the latest NotAfter of the certificates of kind
// issued at or before issuedBefore and not revoked, zero if none.
func (s *Store) LatestCertExpiry(ctx context.Context, kind store.CertKind, issuedBefore time.Time) (time.Time, error) {
	var v sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT max(not_after) FROM issued_certs
		WHERE kind = ? AND issued_at <= ? AND revoked_at IS NULL`, string(kind), micros(issuedBefore)).Scan(&v)
	if err != nil {
		return time.Time{}, fmt.Errorf("latest %s certificate expiry: %w", kind, err)
	}
	if !v.Valid {
		return time.Time{}, nil
	}
	return fromMicros(v.Int64), nil
}

// CountValidCerts counts the certificates of kind issued at or before
// issuedBefore, not revoked and valid at now.
func (s *Store) CountValidCerts(ctx context.Context, kind store.CertKind, issuedBefore, now time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM issued_certs
		WHERE kind = ? AND issued_at <= ? AND revoked_at IS NULL AND not_after > ?`,
		string(kind), micros(issuedBefore), micros(now)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count %s certificates: %w", kind, err)
	}
	return n, nil
}

// bumpCAEpoch moves store.CAEpochMeta on in tx, to at least at in
// microseconds (store.CAEpochMeta says why).
func bumpCAEpoch(ctx context.Context, tx *sql.Tx, at time.Time) error {
	floor := int64(0)
	if !at.IsZero() {
		floor = at.UnixMicro()
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, CAST(max(1, ?) AS TEXT))
		ON CONFLICT (key) DO UPDATE SET value = CAST(max(CAST(meta.value AS INTEGER) + 1, ?) AS TEXT)`,
		store.CAEpochMeta, floor, floor)
	return err
}
