package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// RecordCertificates records certs and appends evs, all in one transaction.
// A serial already recorded for the same kind gives an error wrapping
// store.ErrExists, and nothing is recorded. Principals are kept in the order
// given.
func (s *Store) RecordCertificates(ctx context.Context, certs []store.IssuedCert, evs []audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		if err := insertCerts(ctx, tx, certs); err != nil {
			return err
		}
		_, err := log.append(ctx, evs...)
		return err
	})
	if err != nil {
		return fmt.Errorf("record certificates: %w", err)
	}
	return nil
}

// insertCerts records certs inside tx. A serial already recorded for the
// same kind gives an error wrapping store.ErrExists.
func insertCerts(ctx context.Context, tx pgx.Tx, certs []store.IssuedCert) error {
	for _, c := range certs {
		if c.Serial == "" || c.Kind == "" {
			return fmt.Errorf("certificate %q %q: empty kind or serial", c.Kind, c.Serial)
		}
		if c.SubjectKind != identity.User && c.SubjectKind != identity.Agent {
			return fmt.Errorf("%s certificate %s: subject kind %q is neither user nor agent", c.Kind, c.Serial, c.SubjectKind)
		}
	}
	for _, c := range certs {
		tag, err := tx.Exec(ctx, `INSERT INTO issued_certs
			(kind, serial, subject, subject_kind, principals, not_before, not_after, issued_at, revoked_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (kind, serial) DO NOTHING`,
			string(c.Kind), c.Serial, c.Subject, string(c.SubjectKind), list(c.Principals),
			ts(c.NotBefore), ts(c.NotAfter), ts(c.IssuedAt), nullTS(c.RevokedAt))
		if err != nil {
			return fmt.Errorf("%s certificate %s: %w", c.Kind, c.Serial, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%s certificate %s: %w", c.Kind, c.Serial, store.ErrExists)
		}
	}
	return nil
}

// certColumns are the columns scanCert reads.
const certColumns = `kind, serial, subject, subject_kind, principals, not_before, not_after, issued_at, revoked_at`

func scanCert(row pgx.Row) (store.IssuedCert, error) {
	var (
		c                             store.IssuedCert
		kind, subjectKind             string
		notBefore, notAfter, issuedAt time.Time
		revokedAt                     *time.Time
	)
	if err := row.Scan(&kind, &c.Serial, &c.Subject, &subjectKind, &c.Principals,
		&notBefore, &notAfter, &issuedAt, &revokedAt); err != nil {
		return store.IssuedCert{}, err
	}
	c.Kind, c.SubjectKind, c.Principals = store.CertKind(kind), identity.Kind(subjectKind), unlist(c.Principals)
	c.NotBefore, c.NotAfter, c.IssuedAt = utc(notBefore), utc(notAfter), utc(issuedAt)
	c.RevokedAt = fromNull(revokedAt)
	return c, nil
}

// queryCerts returns the certificates a query selecting certColumns gives.
func queryCerts(ctx context.Context, db querier, query string, args ...any) ([]store.IssuedCert, error) {
	rows, err := db.Query(ctx, query, args...)
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

// GetCertificate returns the record of the kind certificate with serial, or
// an error wrapping store.ErrNotFound.
func (s *Store) GetCertificate(ctx context.Context, kind store.CertKind, serial string) (store.IssuedCert, error) {
	var c store.IssuedCert
	err := s.read(ctx, func(db querier) error {
		var err error
		c, err = scanCert(db.QueryRow(ctx, `SELECT `+certColumns+` FROM issued_certs WHERE kind = $1 AND serial = $2`,
			string(kind), serial))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.IssuedCert{}, fmt.Errorf("get %s certificate %s: %w", kind, serial, err)
	}
	return c, nil
}

// RevokeCertificates sets RevokedAt to at on the certificates f selects
// that are neither revoked nor expired (NotAfter after at), appends ev, and
// returns them as revoked, by kind and serial, in one transaction, which
// also notifies a store.ChangeCert for each.
//
// f must set Subject (with its SubjectKind) or Serial: a filter that
// selects every certificate is refused. When nothing is left to revoke
// (every match already revoked or expired) it returns nil and appends
// nothing, so that revoking again is harmless. A Serial that matches no
// certificate at all gives an error wrapping store.ErrNotFound.
func (s *Store) RevokeCertificates(ctx context.Context, f store.RevokeFilter, at time.Time, ev audit.Event) ([]store.IssuedCert, error) {
	at = audit.Normalize(at)
	switch {
	case f.Subject == "" && f.Serial == "":
		return nil, fmt.Errorf("revoke certificates %s: no subject or serial: refusing to revoke every certificate", describeRevoke(f))
	case f.Subject != "" && f.SubjectKind != identity.User && f.SubjectKind != identity.Agent:
		return nil, fmt.Errorf("revoke certificates %s: subject %s without its kind (user or agent): refusing to revoke another principal's certificates",
			describeRevoke(f), f.Subject)
	case at.IsZero():
		return nil, fmt.Errorf("revoke certificates %s: no revocation time", describeRevoke(f))
	}
	var (
		conds []string
		args  []any
	)
	for _, c := range []struct{ col, v string }{{"subject", f.Subject}, {"subject_kind", string(f.SubjectKind)}, {"serial", f.Serial}, {"kind", string(f.Kind)}} {
		if c.v != "" {
			args = append(args, c.v)
			conds = append(conds, fmt.Sprintf("%s = $%d", c.col, len(args)))
		}
	}
	match := strings.Join(conds, " AND ")
	var revoked []store.IssuedCert
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		revoked = nil
		if f.Serial != "" {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM issued_certs WHERE `+match+`)`, args...).
				Scan(&exists); err != nil {
				return err
			}
			if !exists {
				return store.ErrNotFound
			}
		}
		// One statement revokes and returns what it revoked.
		atArg := len(args) + 1
		var err error
		revoked, err = queryCerts(ctx, tx, fmt.Sprintf(`UPDATE issued_certs SET revoked_at = $%d
			WHERE %s AND revoked_at IS NULL AND not_after > $%d RETURNING `+certColumns, atArg, match, atArg),
			append(args[:len(args):len(args)], at)...)
		if err != nil || len(revoked) == 0 {
			return err
		}
		sortCerts(revoked)
		// Every gateway hears of each certificate when the revocation
		// commits, and never if it rolls back.
		for _, c := range revoked {
			if err := s.notify(ctx, tx, store.ChangeCert, store.CertChangeID(c.Kind, c.Serial), c.Subject); err != nil {
				return err
			}
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke certificates %s: %w", describeRevoke(f), err)
	}
	return revoked, nil
}

// sortCerts sorts certificates by kind, then serial, in byte order.
func sortCerts(certs []store.IssuedCert) {
	slices.SortFunc(certs, func(a, b store.IssuedCert) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.Serial, b.Serial)
	})
}

// describeRevoke names what f selects, for an error message.
func describeRevoke(f store.RevokeFilter) string {
	var parts []string
	if f.Kind != "" {
		parts = append(parts, "kind "+string(f.Kind))
	}
	if f.Subject != "" {
		parts = append(parts, "of "+string(f.SubjectKind)+" "+f.Subject)
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
	err := s.read(ctx, func(db querier) error {
		var err error
		certs, err = queryCerts(ctx, db, `SELECT `+certColumns+` FROM issued_certs
			WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY kind, serial`, ts(now))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoked certificates: %w", err)
	}
	return certs, nil
}
