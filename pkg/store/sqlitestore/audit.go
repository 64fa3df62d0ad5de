package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The audit append's statements. It runs with every decision and every
// change, and preparing them anew was a third of its CPU.
const (
	auditHead = iota
	auditInsert
	auditUpdate
)

var auditSQL = [...]string{
	auditHead: `SELECT seq, hash FROM audit_head WHERE id = 1`,
	auditInsert: `INSERT INTO audit_events
		(seq, time, type, actor, subject, outcome, reason, source_ip, details, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	auditUpdate: `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`,
}

// auditStmts are the audit append's statements, prepared once per store
// (database/sql then keeps one prepared copy per connection). A nil
// *auditStmts, or a statement that could not be prepared, runs the SQL
// text instead.
type auditStmts [len(auditSQL)]*sql.Stmt

// prepareAudit prepares the audit append's statements on db; what fails
// to prepare is left nil.
func prepareAudit(ctx context.Context, db *sql.DB) *auditStmts {
	var a auditStmts
	for i, q := range auditSQL {
		if st, err := db.PrepareContext(ctx, q); err == nil {
			a[i] = st
		}
	}
	return &a
}

// close closes the statements. Safe on nil.
func (a *auditStmts) close() {
	if a == nil {
		return
	}
	for _, st := range a {
		if st != nil {
			st.Close()
		}
	}
}

// in returns statement which bound to tx, or nil to run its text.
func (a *auditStmts) in(ctx context.Context, tx *sql.Tx, which int) *sql.Stmt {
	if a == nil || a[which] == nil {
		return nil
	}
	return tx.StmtContext(ctx, a[which])
}

// queryRow runs statement which in tx.
func (a *auditStmts) queryRow(ctx context.Context, tx *sql.Tx, which int, args ...any) *sql.Row {
	if st := a.in(ctx, tx, which); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, auditSQL[which], args...)
}

// exec runs statement which in tx.
func (a *auditStmts) exec(ctx context.Context, tx *sql.Tx, which int, args ...any) (sql.Result, error) {
	if st := a.in(ctx, tx, which); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, auditSQL[which], args...)
}

// appendEvent chains ev after the recorded head of the log, inserts it and
// moves the head, inside tx. The head (not the last stored event) is what
// ev follows, so that events deleted from the end of the log stay a
// detectable gap instead of being written over.
func appendEvent(ctx context.Context, tx *sql.Tx, st *auditStmts, ev audit.Event) (audit.Event, error) {
	var (
		seq  int64
		hash string
	)
	err := st.queryRow(ctx, tx, auditHead).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Event{}, errors.New("append audit event: the audit head is missing")
	}
	if err != nil {
		return audit.Event{}, fmt.Errorf("append audit event: %w", err)
	}
	var prev *audit.Event
	if seq > 0 {
		prev = &audit.Event{Seq: seq, Hash: hash}
	}
	ev = audit.Chain(prev, ev)

	var details sql.NullString
	if len(ev.Details) > 0 {
		b, err := json.Marshal(ev.Details)
		if err != nil {
			return audit.Event{}, fmt.Errorf("append audit event: %w", err)
		}
		details = sql.NullString{String: string(b), Valid: true}
	}
	if _, err := st.exec(ctx, tx, auditInsert,
		ev.Seq, micros(ev.Time), string(ev.Type), ev.Actor, ev.Subject, string(ev.Outcome),
		ev.Reason, ev.SourceIP, details, ev.PrevHash, ev.Hash); err != nil {
		return audit.Event{}, fmt.Errorf("append audit event %d: %w", ev.Seq, err)
	}
	if _, err := st.exec(ctx, tx, auditUpdate, ev.Seq, ev.Hash); err != nil {
		return audit.Event{}, fmt.Errorf("append audit event %d: %w", ev.Seq, err)
	}
	return ev, nil
}

// appendEvents appends evs in order.
func appendEvents(ctx context.Context, tx *sql.Tx, st *auditStmts, evs ...audit.Event) error {
	for _, ev := range evs {
		if _, err := appendEvent(ctx, tx, st, ev); err != nil {
			return err
		}
	}
	return nil
}

// AppendAudit appends ev on its own and returns it as stored (Seq, Time,
// PrevHash and Hash filled in).
func (s *Store) AppendAudit(ctx context.Context, ev audit.Event) (audit.Event, error) {
	var out audit.Event
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = appendEvent(ctx, tx, s.audit, ev)
		return err
	})
	if err != nil {
		return audit.Event{}, fmt.Errorf("append audit %s: %w", ev.Type, err)
	}
	return out, nil
}

// AppendAudits appends evs in order, in one transaction (group commit), and
// returns them as stored. Either all of them are appended or none is. An
// empty evs appends nothing and returns nil, nil.
func (s *Store) AppendAudits(ctx context.Context, evs []audit.Event) ([]audit.Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	out := make([]audit.Event, 0, len(evs))
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, ev := range evs {
			e, err := appendEvent(ctx, tx, s.audit, ev)
			if err != nil {
				return fmt.Errorf("%s: %w", ev.Type, err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("append %d audit events: %w", len(evs), err)
	}
	return out, nil
}

// ListAudit returns the events f selects, in log (Seq) order.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]audit.Event, error) {
	var q strings.Builder
	q.WriteString(`SELECT seq, time, type, actor, subject, outcome, reason, source_ip, details, prev_hash, hash
		FROM audit_events WHERE seq > ? ORDER BY seq`)
	args := []any{f.AfterSeq}
	if f.Limit > 0 {
		q.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var evs []audit.Event
	for rows.Next() {
		var (
			ev        audit.Event
			t         int64
			typ, outc string
			details   sql.NullString
		)
		if err := rows.Scan(&ev.Seq, &t, &typ, &ev.Actor, &ev.Subject, &outc, &ev.Reason,
			&ev.SourceIP, &details, &ev.PrevHash, &ev.Hash); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		ev.Time, ev.Type, ev.Outcome = fromMicros(t), audit.Type(typ), audit.Outcome(outc)
		if details.Valid {
			if err := json.Unmarshal([]byte(details.String), &ev.Details); err != nil {
				return nil, fmt.Errorf("list audit: event %d: details: %w", ev.Seq, err)
			}
			if len(ev.Details) == 0 {
				ev.Details = nil
			}
		}
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return evs, nil
}

// AuditHead returns the hash of the last event appended, "" if none.
func (s *Store) AuditHead(ctx context.Context) (string, error) {
	var hash string
	err := s.db.QueryRowContext(ctx, `SELECT hash FROM audit_head WHERE id = 1`).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errors.New("audit head: the audit head is missing")
	}
	if err != nil {
		return "", fmt.Errorf("audit head: %w", err)
	}
	return hash, nil
}
