package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// RecordCertificates records certs and appends evs, all in one transaction.
// A serial already recorded for the same kind gives an error wrapping
// store.ErrExists, and nothing is recorded. Principals are kept in the order
// given.
func (s *Store) RecordCertificates(ctx context.Context, certs []store.IssuedCert, evs []audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := insertCerts(ctx, tx, certs); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, evs...)
	})
	if err != nil {
		return fmt.Errorf("record certificates: %w", err)
	}
	return nil
}

// insertCerts records certs inside tx. A serial already recorded for the
// same kind gives an error wrapping store.ErrExists.
func insertCerts(ctx context.Context, tx *sql.Tx, certs []store.IssuedCert) error {
	for _, c := range certs {
		if c.Serial == "" || c.Kind == "" {
			return fmt.Errorf("certificate %q %q: empty kind or serial", c.Kind, c.Serial)
		}
		if c.SubjectKind != identity.User && c.SubjectKind != identity.Agent {
			return fmt.Errorf("%s certificate %s: subject kind %q is neither user nor agent", c.Kind, c.Serial, c.SubjectKind)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO issued_certs
			(kind, serial, subject, subject_kind, principals, not_before, not_after, issued_at, revoked_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			string(c.Kind), c.Serial, c.Subject, string(c.SubjectKind), encodeList(c.Principals),
			micros(c.NotBefore), micros(c.NotAfter), micros(c.IssuedAt), nullMicros(c.RevokedAt))
		if isDuplicate(err) {
			return fmt.Errorf("%s certificate %s: %w", c.Kind, c.Serial, store.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("%s certificate %s: %w", c.Kind, c.Serial, err)
		}
	}
	return nil
}

// GetCertificate returns the record of the kind certificate with serial, or
// an error wrapping store.ErrNotFound.
func (s *Store) GetCertificate(ctx context.Context, kind store.CertKind, serial string) (store.IssuedCert, error) {
	var (
		c                             = store.IssuedCert{Kind: kind, Serial: serial}
		principals, subjectKind       string
		notBefore, notAfter, issuedAt int64
		revokedAt                     sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, `SELECT subject, subject_kind, principals, not_before, not_after, issued_at, revoked_at
		FROM issued_certs WHERE kind = ? AND serial = ?`, string(kind), serial).
		Scan(&c.Subject, &subjectKind, &principals, &notBefore, &notAfter, &issuedAt, &revokedAt)
	c.SubjectKind = identity.Kind(subjectKind)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err == nil {
		c.Principals, err = decodeList(principals)
	}
	if err != nil {
		return store.IssuedCert{}, fmt.Errorf("get %s certificate %s: %w", kind, serial, err)
	}
	c.NotBefore, c.NotAfter, c.IssuedAt = fromMicros(notBefore), fromMicros(notAfter), fromMicros(issuedAt)
	c.RevokedAt = fromNullMicros(revokedAt)
	return c, nil
}
