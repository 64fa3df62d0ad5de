package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.RevocationStamper = (*Store)(nil)

// RevocationStamp implements store.RevocationStamper with one aggregate
// over the revoked certificates expiring after since (the partial index
// issued_certs_revoked).
func (s *Store) RevocationStamp(ctx context.Context, since time.Time) (store.RevocationStamp, error) {
	var st store.RevocationStamp
	err := s.read(ctx, func(db querier) error {
		return db.QueryRow(ctx, `SELECT COUNT(*), COALESCE((EXTRACT(EPOCH FROM MAX(revoked_at)) * 1000000)::bigint, 0)
			FROM issued_certs WHERE not_after > $1 AND revoked_at IS NOT NULL`, ts(since)).Scan(&st.Count, &st.LastRevoked)
	})
	if err != nil {
		return store.RevocationStamp{}, fmt.Errorf("revocation stamp: %w", err)
	}
	return st, nil
}
