package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// sessionColumns are the columns scanSession reads, from "sessions s".
// Recording is whether a recording row exists, so it cannot disagree with
// the recordings table.
const sessionColumns = `s.id, s.user_name, s.node, s.login, s.created_at, s.deadline, s.state,
	s.ended_at, s.end_reason, s.bytes_in, s.bytes_out, s.source_ip, s.cert_serial,
	EXISTS (SELECT 1 FROM recordings r WHERE r.session_id = s.id)`

func scanSession(row pgx.Row) (store.Session, error) {
	var (
		ss                store.Session
		created, deadline time.Time
		state             string
		ended             *time.Time
	)
	if err := row.Scan(&ss.ID, &ss.User, &ss.Node, &ss.Login, &created, &deadline, &state,
		&ended, &ss.EndReason, &ss.BytesIn, &ss.BytesOut, &ss.SourceIP, &ss.CertSerial, &ss.Recording); err != nil {
		return store.Session{}, err
	}
	ss.CreatedAt, ss.Deadline, ss.EndedAt = utc(created), utc(deadline), fromNull(ended)
	ss.State = store.SessionState(state)
	return ss, nil
}

// getSession reads the session id; lock is "" or " FOR NO KEY UPDATE OF s".
func getSession(ctx context.Context, db querier, id, lock string) (store.Session, error) {
	ss, err := scanSession(db.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions s WHERE s.id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Session{}, store.ErrNotFound
	}
	return ss, err
}

// CreateSession records ss, the certificates issued for it and evs, in one
// transaction: a duplicate session ID or certificate gives an error wrapping
// store.ErrExists and records nothing.
//
// ss.ID must be URL-safe (see store.Session), ss.State active or empty
// (meaning active), ss.Deadline set and ss.EndedAt zero; ss.Recording is
// ignored. The session is refused with store.ErrLocked if ss.User is a
// locked user or ss.Node a locked agent: the check and the insert are one
// transaction under the audit head lock, which SetUserLocked and
// SetAgentLocked take too, so a session cannot be created beside a lock
// that an administrator has just set on any gateway.
func (s *Store) CreateSession(ctx context.Context, ss store.Session, certs []store.IssuedCert, evs []audit.Event) error {
	if ss.State == "" {
		ss.State = store.SessionActive
	}
	var bad error
	switch {
	case store.CheckSessionID(ss.ID) != nil:
		bad = store.CheckSessionID(ss.ID)
	case ss.State != store.SessionActive:
		bad = fmt.Errorf("a new session must be active, not %q", ss.State)
	case !ss.EndedAt.IsZero() || ss.EndReason != "":
		bad = errors.New("a new session cannot have ended")
	case ss.User == "" || ss.Node == "" || ss.Login == "":
		bad = errors.New("empty user, node or login")
	case ss.Deadline.IsZero():
		bad = errors.New("no deadline")
	case ss.BytesIn < 0 || ss.BytesOut < 0:
		bad = errors.New("negative byte count")
	}
	if bad != nil {
		return fmt.Errorf("create session %s: %w", ss.ID, bad)
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var userLocked, agentLocked bool
		if err := tx.QueryRow(ctx, `SELECT
				COALESCE((SELECT locked FROM users WHERE name = $1), false),
				COALESCE((SELECT locked FROM agents WHERE name = $2), false)`, ss.User, ss.Node).
			Scan(&userLocked, &agentLocked); err != nil {
			return err
		}
		switch {
		case userLocked:
			return fmt.Errorf("user %s is locked by an administrator: %w", ss.User, store.ErrLocked)
		case agentLocked:
			return fmt.Errorf("agent %s is locked by an administrator: %w", ss.Node, store.ErrLocked)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO sessions
			(id, user_name, node, login, created_at, deadline, state, ended_at, end_reason,
			 bytes_in, bytes_out, source_ip, cert_serial)
			VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, '', $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
			ss.ID, ss.User, ss.Node, ss.Login, ts(ss.CreatedAt), ts(ss.Deadline), string(ss.State),
			ss.BytesIn, ss.BytesOut, ss.SourceIP, ss.CertSerial)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		if err := insertCerts(ctx, tx, certs); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeSession, ss.ID, ss.User); err != nil {
			return err
		}
		_, err = log.append(ctx, evs...)
		return err
	})
	if err != nil {
		return fmt.Errorf("create session %s: %w", ss.ID, err)
	}
	return nil
}

// GetSession returns the session id, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	var ss store.Session
	err := s.read(ctx, func(db querier) error {
		var err error
		ss, err = getSession(ctx, db, id, "")
		return err
	})
	if err != nil {
		return store.Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return ss, nil
}

// ListSessions returns the sessions f selects, newest (CreatedAt) first;
// sessions created at the same time come by ID, descending.
func (s *Store) ListSessions(ctx context.Context, f store.SessionFilter) ([]store.Session, error) {
	var (
		q     strings.Builder
		conds []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	q.WriteString(`SELECT ` + sessionColumns + ` FROM sessions s`)
	if f.User != "" {
		add(`s.user_name = $%d`, f.User)
	}
	if f.Node != "" {
		add(`s.node = $%d`, f.Node)
	}
	if f.ActiveOnly {
		add(`s.state = $%d`, string(store.SessionActive))
	}
	if len(conds) > 0 {
		q.WriteString(` WHERE ` + strings.Join(conds, ` AND `))
	}
	q.WriteString(` ORDER BY s.created_at DESC, s.id DESC`)
	if f.Limit > 0 {
		args = append(args, f.Limit)
		fmt.Fprintf(&q, ` LIMIT $%d`, len(args))
	}
	var list []store.Session
	err := s.read(ctx, func(db querier) error {
		list = nil
		rows, err := db.Query(ctx, q.String(), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			ss, err := scanSession(rows)
			if err != nil {
				return err
			}
			list = append(list, ss)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return list, nil
}

// EndSession ends the active session id at at, in state (expired, revoked
// or closed) for reason, appends ev and returns the session as ended, in
// one transaction. A session that has already ended is returned as it is,
// with no error and no event: of two concurrent ends (the deadline on one
// gateway and an administrator's revocation on another, say) the first
// wins and the second is a no-op. An unknown ID gives an error wrapping
// store.ErrNotFound.
func (s *Store) EndSession(ctx context.Context, id string, state store.SessionState, reason string, at time.Time, ev audit.Event) (store.Session, error) {
	at = audit.Normalize(at)
	switch state {
	case store.SessionExpired, store.SessionRevoked, store.SessionClosed:
	default:
		return store.Session{}, fmt.Errorf("end session %s: cannot end a session in state %q", id, state)
	}
	if at.IsZero() {
		return store.Session{}, fmt.Errorf("end session %s: no end time", id)
	}
	var ss store.Session
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var err error
		if ss, err = getSession(ctx, tx, id, " FOR NO KEY UPDATE OF s"); err != nil {
			return err
		}
		if ss.State != store.SessionActive {
			return nil // already ended: unchanged, no event
		}
		tag, err := tx.Exec(ctx, `UPDATE sessions SET state = $2, ended_at = $3, end_reason = $4
			WHERE id = $1 AND state = 'active'`, id, string(state), at, reason)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			// Not reached: the row is locked since the SELECT.
			return fmt.Errorf("the session changed while it was being ended: %w", store.ErrNotFound)
		}
		ss.State, ss.EndedAt, ss.EndReason = state, at, reason
		if err := s.notify(ctx, tx, store.ChangeSession, id, ss.User); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return store.Session{}, fmt.Errorf("end session %s: %w", id, err)
	}
	return ss, nil
}

// AddSessionBytes adds in and out to the byte totals of the session id,
// whether or not it has ended (the last counts may arrive after the end),
// in one UPDATE. It appends no event. An unknown ID gives an error wrapping
// store.ErrNotFound.
func (s *Store) AddSessionBytes(ctx context.Context, id string, in, out int64) error {
	if in < 0 || out < 0 {
		return fmt.Errorf("add session bytes %s: negative count (%d in, %d out)", id, in, out)
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE sessions SET bytes_in = bytes_in + $2, bytes_out = bytes_out + $3 WHERE id = $1`,
			id, in, out)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add session bytes %s: %w", id, err)
	}
	return nil
}

// SaveRecording stores the sealed recording of the session sessionID,
// replacing any earlier one. An unknown session gives an error wrapping
// store.ErrNotFound; an empty recording is refused (a sealed one never is).
// It appends no event.
func (s *Store) SaveRecording(ctx context.Context, sessionID string, sealed []byte) error {
	if len(sealed) == 0 {
		return fmt.Errorf("save recording of session %s: empty recording", sessionID)
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO recordings (session_id, data, size) VALUES ($1, $2, $3)
			ON CONFLICT (session_id) DO UPDATE SET data = excluded.data, size = excluded.size`,
			sessionID, sealed, len(sealed))
		if isForeignKey(err) {
			return store.ErrNotFound // no such session
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("save recording of session %s: %w", sessionID, err)
	}
	return nil
}

// GetRecording returns the sealed recording of the session sessionID, or an
// error wrapping store.ErrNotFound if there is none.
func (s *Store) GetRecording(ctx context.Context, sessionID string) ([]byte, error) {
	var data []byte
	err := s.read(ctx, func(db querier) error {
		return db.QueryRow(ctx, `SELECT data FROM recordings WHERE session_id = $1`, sessionID).Scan(&data)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get recording of session %s: %w", sessionID, err)
	}
	return data, nil
}
