package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// chain appends events to the audit log inside a transaction that holds the
// lock on the audit head. It follows the recorded head, not the last stored
// event, so that events deleted from the end of the log stay a detectable
// gap instead of being written over.
type chain struct {
	tx   pgx.Tx
	seq  int64
	hash string
}

// lockHead locks the audit head row for the rest of tx and returns the
// chain that appends after it. Every gateway's appends queue on this row
// lock, so the log stays one chain.
func lockHead(ctx context.Context, tx pgx.Tx) (*chain, error) {
	c := &chain{tx: tx}
	err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&c.seq, &c.hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errors.New("append audit event: the audit head is missing")
	}
	if err != nil {
		return nil, fmt.Errorf("lock the audit head: %w", err)
	}
	return c, nil
}

// append chains evs in order after the head, inserts them and moves the
// head, in one round trip, and returns them as stored.
func (c *chain) append(ctx context.Context, evs ...audit.Event) ([]audit.Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	var prev *audit.Event
	if c.seq > 0 {
		prev = &audit.Event{Seq: c.seq, Hash: c.hash}
	}
	out := make([]audit.Event, 0, len(evs))
	b := &pgx.Batch{}
	for _, ev := range evs {
		e := audit.Chain(prev, cleanEvent(ev))
		var details any // NULL when there are none
		if len(e.Details) > 0 {
			details = e.Details
		}
		b.Queue(`INSERT INTO audit_events
			(seq, time, type, actor, subject, outcome, reason, source_ip, details, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			e.Seq, ts(e.Time), string(e.Type), e.Actor, e.Subject, string(e.Outcome),
			e.Reason, e.SourceIP, details, e.PrevHash, e.Hash)
		out = append(out, e)
		prev = &e
	}
	last := out[len(out)-1]
	b.Queue(`UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, last.Seq, last.Hash)
	if err := c.tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("append audit events %d to %d: %w", out[0].Seq, last.Seq, err)
	}
	c.seq, c.hash = last.Seq, last.Hash
	return out, nil
}

// audited runs fn in a write transaction that holds the audit head from its
// start (see the package documentation), with the chain fn appends its
// events to.
func (s *Store) audited(ctx context.Context, fn func(tx pgx.Tx, log *chain) error) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		log, err := lockHead(ctx, tx)
		if err != nil {
			return err
		}
		return fn(tx, log)
	})
}

// AppendAudit appends ev on its own and returns it as stored (Seq, Time,
// PrevHash and Hash filled in).
func (s *Store) AppendAudit(ctx context.Context, ev audit.Event) (audit.Event, error) {
	var out []audit.Event
	err := s.audited(ctx, func(_ pgx.Tx, log *chain) error {
		var err error
		out, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return audit.Event{}, fmt.Errorf("append audit %s: %w", ev.Type, err)
	}
	return out[0], nil
}

// AppendAudits appends evs in order, in one transaction and one round trip
// (group commit), and returns them as stored. Either all of them are
// appended or none is. An empty evs appends nothing and returns nil, nil.
func (s *Store) AppendAudits(ctx context.Context, evs []audit.Event) ([]audit.Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	var out []audit.Event
	err := s.audited(ctx, func(_ pgx.Tx, log *chain) error {
		var err error
		out, err = log.append(ctx, evs...)
		return err
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
		FROM audit_events WHERE seq > $1 ORDER BY seq`)
	args := []any{f.AfterSeq}
	if f.Limit > 0 {
		q.WriteString(` LIMIT $2`)
		args = append(args, f.Limit)
	}
	var evs []audit.Event
	err := s.read(ctx, func(db querier) error {
		evs = nil
		rows, err := db.Query(ctx, q.String(), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				ev        audit.Event
				t         time.Time
				typ, outc string
				details   []byte
			)
			if err := rows.Scan(&ev.Seq, &t, &typ, &ev.Actor, &ev.Subject, &outc, &ev.Reason,
				&ev.SourceIP, &details, &ev.PrevHash, &ev.Hash); err != nil {
				return err
			}
			ev.Time, ev.Type, ev.Outcome = utc(t), audit.Type(typ), audit.Outcome(outc)
			if details != nil {
				if err := json.Unmarshal(details, &ev.Details); err != nil {
					return fmt.Errorf("event %d: details: %w", ev.Seq, err)
				}
				if len(ev.Details) == 0 {
					ev.Details = nil
				}
			}
			evs = append(evs, ev)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return evs, nil
}

// AuditHead returns the hash of the last event appended, "" if none.
func (s *Store) AuditHead(ctx context.Context) (string, error) {
	var hash string
	err := s.read(ctx, func(db querier) error {
		return db.QueryRow(ctx, `SELECT hash FROM audit_head WHERE id = 1`).Scan(&hash)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errors.New("audit head: the audit head is missing")
	}
	if err != nil {
		return "", fmt.Errorf("audit head: %w", err)
	}
	return hash, nil
}
