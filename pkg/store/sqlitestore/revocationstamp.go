package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.RevocationStamper = (*Store)(nil)

// RevocationStamp implements store.RevocationStamper with one aggregate
// over the certificates expiring after since (the not_after index).
func (s *Store) RevocationStamp(ctx context.Context, since time.Time) (store.RevocationStamp, error) {
	var st store.RevocationStamp
	err := s.read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(revoked_at), 0) FROM issued_certs
			WHERE not_after > ? AND revoked_at IS NOT NULL`, micros(audit.Normalize(since))).Scan(&st.Count, &st.LastRevoked)
	})
	if err != nil {
		return store.RevocationStamp{}, fmt.Errorf("revocation stamp: %w", err)
	}
	return st, nil
}
