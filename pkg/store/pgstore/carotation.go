package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// AddCAKey stores k inactive and appends ev, in one transaction (which
// holds the audit head, so that two gateways starting a rotation at once
// are serialised). If an inactive key of k.Kind is stored already (a
// rotation is under way) the result wraps store.ErrExists and nothing is
// stored. Every gateway is notified (store.ChangeCA).
func (s *Store) AddCAKey(ctx context.Context, k store.CAKey, ev audit.Event) error {
	if k.Kind == "" || len(k.Public) == 0 || len(k.SealedPrivate) == 0 {
		return fmt.Errorf("add %q CA key: empty kind, public or private key", k.Kind)
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM ca_keys WHERE kind = $1 AND NOT active`, k.Kind).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("a rotation of the %s CA is under way: %w", k.Kind, store.ErrExists)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO ca_keys (kind, public, sealed_private, created_at, active)
			VALUES ($1, $2, $3, $4, false)`, k.Kind, k.Public, k.SealedPrivate, ts(k.CreatedAt)); err != nil {
			return err
		}
		if err := bumpCAEpoch(ctx, tx, ev.Time); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeCA, k.Kind, ""); err != nil {
			return err
		}
		_, err := log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("add %s CA key: %w", k.Kind, err)
	}
	return nil
}

// ActivateCAKey makes the key of kind with this public part the active one,
// records at under store.CAActivatedMeta(kind) and appends ev, in one
// transaction. An unknown key gives an error wrapping store.ErrNotFound.
func (s *Store) ActivateCAKey(ctx context.Context, kind string, public []byte, at time.Time, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var id int64
		err := tx.QueryRow(ctx, `SELECT id FROM ca_keys WHERE kind = $1 AND public = $2`, kind, public).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE ca_keys SET active = (id = $1) WHERE kind = $2`, id, kind); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
			store.CAActivatedMeta(kind), at.UTC().Format(time.RFC3339Nano)); err != nil {
			return err
		}
		if err := bumpCAEpoch(ctx, tx, ev.Time); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeCA, kind, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("activate %s CA key: %w", kind, err)
	}
	return nil
}

// RemoveCAKey removes the inactive key of kind with this public part and
// appends ev, in one transaction. An unknown key gives an error wrapping
// store.ErrNotFound; the active key is never removed.
func (s *Store) RemoveCAKey(ctx context.Context, kind string, public []byte, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var active bool
		err := tx.QueryRow(ctx, `SELECT active FROM ca_keys WHERE kind = $1 AND public = $2`, kind, public).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if active {
			return errors.New("the active key cannot be removed")
		}
		if _, err := tx.Exec(ctx, `DELETE FROM ca_keys WHERE kind = $1 AND public = $2 AND NOT active`, kind, public); err != nil {
			return err
		}
		if err := bumpCAEpoch(ctx, tx, ev.Time); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeCA, kind, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove %s CA key: %w", kind, err)
	}
	return nil
}

// LatestCertExpiry returns the latest NotAfter of the certificates of kind
// issued at or before issuedBefore and not revoked, zero if none.
func (s *Store) LatestCertExpiry(ctx context.Context, kind store.CertKind, issuedBefore time.Time) (time.Time, error) {
	var v *time.Time
	err := s.read(ctx, func(db querier) error {
		return db.QueryRow(ctx, `SELECT max(not_after) FROM issued_certs
			WHERE kind = $1 AND issued_at <= $2 AND revoked_at IS NULL`, string(kind), ts(issuedBefore)).Scan(&v)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("latest %s certificate expiry: %w", kind, err)
	}
	if v == nil {
		return time.Time{}, nil
	}
	return utc(*v), nil
}

// CountValidCerts counts the certificates of kind issued at or before
// issuedBefore, not revoked and valid at now.
func (s *Store) CountValidCerts(ctx context.Context, kind store.CertKind, issuedBefore, now time.Time) (int, error) {
	var n int
	err := s.read(ctx, func(db querier) error {
		return db.QueryRow(ctx, `SELECT count(*) FROM issued_certs
			WHERE kind = $1 AND issued_at <= $2 AND revoked_at IS NULL AND not_after > $3`,
			string(kind), ts(issuedBefore), ts(now)).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count %s certificates: %w", kind, err)
	}
	return n, nil
}

// bumpCAEpoch moves store.CAEpochMeta on in tx, to at least at in
// microseconds (store.CAEpochMeta says why).
func bumpCAEpoch(ctx context.Context, tx pgx.Tx, at time.Time) error {
	floor := int64(0)
	if !at.IsZero() {
		floor = at.UnixMicro()
	}
	_, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, greatest(1, $2::bigint)::text)
		ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value::bigint + 1, $2::bigint)::text`,
		store.CAEpochMeta, floor)
	return err
}
