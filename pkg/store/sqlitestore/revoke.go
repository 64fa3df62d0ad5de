package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

const certColumns = `kind, serial, subject, subject_kind, principals, not_before, not_after, issued_at, revoked_at`

func scanCert(row scanner) (store.IssuedCert, error) {
	var (
		c                             store.IssuedCert
		kind, subjectKind, principals string
		notBefore, notAfter, issuedAt int64
		revokedAt                     sql.NullInt64
	)
	if err := row.Scan(&kind, &c.Serial, &c.Subject, &subjectKind, &principals, &notBefore, &notAfter, &issuedAt, &revokedAt); err != nil {
		return store.IssuedCert{}, err
	}
	c.SubjectKind = identity.Kind(subjectKind)
	var err error
	if c.Principals, err = decodeList(principals); err != nil {
		return store.IssuedCert{}, fmt.Errorf("%s certificate %s: %w", kind, c.Serial, err)
	}
	c.Kind = store.CertKind(kind)
	c.NotBefore, c.NotAfter, c.IssuedAt = fromMicros(notBefore), fromMicros(notAfter), fromMicros(issuedAt)
	c.RevokedAt = fromNullMicros(revokedAt)
	return c, nil
}

// queryCerts returns the certificates a query selecting certColumns gives.
func queryCerts(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]store.IssuedCert, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var certs []store.IssuedCert
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, rows.Err()
}

// RevokeCertificates sets RevokedAt to at on the certificates f selects
// that are neither revoked nor expired (NotAfter after at), appends ev, and
// returns them as revoked, by kind and serial, in one write transaction;
// once it commits, a store.ChangeCert is emitted for each.
//
// f must set Subject or Serial: a filter that selects every certificate is
// refused. When nothing is left to revoke (every match already revoked or
// expired) it returns nil and appends nothing, so that revoking again is
// harmless. A Serial that matches no certificate at all gives an error
// wrapping store.ErrNotFound.
func (s *Store) RevokeCertificates(ctx context.Context, f store.RevokeFilter, at time.Time, ev audit.Event) ([]store.IssuedCert, error) {
	at = audit.Normalize(at)
	var conds []string
	var args []any
	for _, c := range []struct{ col, v string }{{"subject", f.Subject}, {"subject_kind", string(f.SubjectKind)}, {"serial", f.Serial}, {"kind", string(f.Kind)}} {
		if c.v != "" {
			conds = append(conds, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	var revoked []store.IssuedCert
	err := s.write(ctx, func(tx *sql.Tx) error {
		switch {
		case f.Subject == "" && f.Serial == "":
			return errors.New("no subject or serial: refusing to revoke every certificate")
		case f.Subject != "" && f.SubjectKind != identity.User && f.SubjectKind != identity.Agent:
			return fmt.Errorf("subject %s without its kind (user or agent): refusing to revoke another principal's certificates", f.Subject)
		case at.IsZero():
			return errors.New("no revocation time")
		}
		match := strings.Join(conds, " AND ")
		if f.Serial != "" {
			var exists bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM issued_certs WHERE `+match+`)`, args...).
				Scan(&exists); err != nil {
				return err
			}
			if !exists {
				return store.ErrNotFound
			}
		}
		live := match + ` AND revoked_at IS NULL AND not_after > ?`
		liveArgs := append(args[:len(args):len(args)], micros(at))
		var err error
		revoked, err = queryCerts(ctx, tx, `SELECT `+certColumns+` FROM issued_certs WHERE `+live+` ORDER BY kind, serial`, liveArgs...)
		if err != nil || len(revoked) == 0 {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE issued_certs SET revoked_at = ? WHERE `+live,
			append([]any{micros(at)}, liveArgs...)...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != int64(len(revoked)) {
			// Not reached: the write transaction holds the lock since the
			// SELECT.
			return fmt.Errorf("revoked %d certificates; expected %d", n, len(revoked))
		}
		for i := range revoked {
			revoked[i].RevokedAt = at
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return nil, fmt.Errorf("revoke certificates %s: %w", describeRevoke(f), err)
	}
	for _, c := range revoked {
		s.emit(store.ChangeCert, store.CertChangeID(c.Kind, c.Serial), c.Subject)
	}
	return revoked, nil
}

// describeRevoke names what f selects, for an error message.
func describeRevoke(f store.RevokeFilter) string {
	var parts []string
	if f.Kind != "" {
		parts = append(parts, "kind "+string(f.Kind))
	}
	if f.Subject != "" {
		parts = append(parts, "of "+f.Subject)
	}
	if f.Serial != "" {
		parts = append(parts, "serial "+f.Serial)
	}
	if len(parts) == 0 {
		return "(no filter)"
	}
	return strings.Join(parts, " ")
}

// RevokedCertificates returns the certificates revoked and not yet expired
// at now (NotAfter after now), by kind and serial.
func (s *Store) RevokedCertificates(ctx context.Context, now time.Time) ([]store.IssuedCert, error) {
	var certs []store.IssuedCert
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		certs, err = queryCerts(ctx, tx, `SELECT `+certColumns+` FROM issued_certs
			WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY kind, serial`, micros(audit.Normalize(now)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoked certificates: %w", err)
	}
	return certs, nil
}
