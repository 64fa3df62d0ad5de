package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// sessionColumns are the columns scanSession reads, from "sessions s".
// Recording is whether a recording row exists, so it cannot disagree with
// the recordings table.
const sessionColumns = `s.id, s.user_name, s.node, s.login, s.created_at, s.deadline, s.state,
	s.ended_at, s.end_reason, s.bytes_in, s.bytes_out, s.source_ip, s.cert_serial,
	EXISTS (SELECT 1 FROM recordings r WHERE r.session_id = s.id)`

func scanSession(row scanner) (store.Session, error) {
	var (
		ss                store.Session
		created, deadline int64
		state             string
		ended             sql.NullInt64
	)
	if err := row.Scan(&ss.ID, &ss.User, &ss.Node, &ss.Login, &created, &deadline, &state,
		&ended, &ss.EndReason, &ss.BytesIn, &ss.BytesOut, &ss.SourceIP, &ss.CertSerial, &ss.Recording); err != nil {
		return store.Session{}, err
	}
	ss.CreatedAt, ss.Deadline, ss.EndedAt = fromMicros(created), fromMicros(deadline), fromNullMicros(ended)
	ss.State = store.SessionState(state)
	return ss, nil
}

func getSession(ctx context.Context, q queryer, id string) (store.Session, error) {
	ss, err := scanSession(q.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions s WHERE s.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, store.ErrNotFound
	}
	return ss, err
}

// CreateSession records ss, the certificates issued for it and evs, in one
// write transaction: a duplicate session ID or certificate gives an error
// wrapping store.ErrExists and records nothing.
//
// ss.ID must be URL-safe (see store.Session), ss.State active or empty
// (meaning active), ss.Deadline set and ss.EndedAt zero; ss.Recording is
// ignored. The session is refused with store.ErrLocked if ss.User is a
// locked user or ss.Node a locked agent: the check and the insert are one
// transaction, so a session cannot be created beside a lock that an
// administrator has just set (and whose revocation has just run).
func (s *Store) CreateSession(ctx context.Context, ss store.Session, certs []store.IssuedCert, evs []audit.Event) error {
	if ss.State == "" {
		ss.State = store.SessionActive
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		switch {
		case store.CheckSessionID(ss.ID) != nil:
			return store.CheckSessionID(ss.ID)
		case ss.State != store.SessionActive:
			return fmt.Errorf("a new session must be active, not %q", ss.State)
		case !ss.EndedAt.IsZero() || ss.EndReason != "":
			return errors.New("a new session cannot have ended")
		case ss.User == "" || ss.Node == "" || ss.Login == "":
			return errors.New("empty user, node or login")
		case ss.Deadline.IsZero():
			return errors.New("no deadline")
		case ss.BytesIn < 0 || ss.BytesOut < 0:
			return errors.New("negative byte count")
		}
		for _, l := range []struct{ table, what, name string }{
			{"users", "user", ss.User},
			{"agents", "agent", ss.Node},
		} {
			var locked bool
			err := tx.QueryRowContext(ctx, `SELECT locked FROM `+l.table+` WHERE name = ?`, l.name).Scan(&locked)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if locked {
				return fmt.Errorf("%s %s is locked by an administrator: %w", l.what, l.name, store.ErrLocked)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions
			(id, user_name, node, login, created_at, deadline, state, ended_at, end_reason,
			 bytes_in, bytes_out, source_ip, cert_serial)
			VALUES (?, ?, ?, ?, ?, ?, ?, NULL, '', ?, ?, ?, ?)`,
			ss.ID, ss.User, ss.Node, ss.Login, micros(ss.CreatedAt), micros(ss.Deadline), string(ss.State),
			ss.BytesIn, ss.BytesOut, ss.SourceIP, ss.CertSerial)
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		if err := insertCerts(ctx, tx, certs); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, evs...)
	})
	if err != nil {
		return fmt.Errorf("create session %s: %w", ss.ID, err)
	}
	s.emit(store.ChangeSession, ss.ID, ss.User)
	return nil
}

// GetSession returns the session id, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	ss, err := getSession(ctx, s.db, id)
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
	q.WriteString(`SELECT ` + sessionColumns + ` FROM sessions s`)
	if f.User != "" {
		conds, args = append(conds, `s.user_name = ?`), append(args, f.User)
	}
	if f.Node != "" {
		conds, args = append(conds, `s.node = ?`), append(args, f.Node)
	}
	if f.ActiveOnly {
		conds, args = append(conds, `s.state = ?`), append(args, string(store.SessionActive))
	}
	if len(conds) > 0 {
		q.WriteString(` WHERE ` + strings.Join(conds, ` AND `))
	}
	q.WriteString(` ORDER BY s.created_at DESC, s.id DESC`)
	if f.Limit > 0 {
		q.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	var list []store.Session
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q.String(), args...)
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
// one write transaction. A session that has already ended is returned as
// it is, with no error and no event: of two concurrent ends (the deadline
// and an administrator's revocation, say) the first wins and the second is
// a no-op. An unknown ID gives an error wrapping store.ErrNotFound.
func (s *Store) EndSession(ctx context.Context, id string, state store.SessionState, reason string, at time.Time, ev audit.Event) (store.Session, error) {
	at = audit.Normalize(at)
	var ss store.Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		switch state {
		case store.SessionExpired, store.SessionRevoked, store.SessionClosed:
		default:
			return fmt.Errorf("cannot end a session in state %q", state)
		}
		if at.IsZero() {
			return errors.New("no end time")
		}
		var err error
		if ss, err = getSession(ctx, tx, id); err != nil {
			return err
		}
		if ss.State != store.SessionActive {
			return nil // already ended: unchanged, no event
		}
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET state = ?, ended_at = ?, end_reason = ?
			WHERE id = ? AND state = ?`, string(state), micros(at), reason, id, string(store.SessionActive))
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			// Not reached: the write transaction holds the lock since the
			// SELECT.
			return fmt.Errorf("the session changed while it was being ended: %w", err)
		}
		ss.State, ss.EndedAt, ss.EndReason = state, at, reason
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return store.Session{}, fmt.Errorf("end session %s: %w", id, err)
	}
	s.emit(store.ChangeSession, id, ss.User)
	return ss, nil
}

// AddSessionBytes adds in and out to the byte totals of the session id,
// whether or not it has ended (the last counts may arrive after the end).
// It appends no event. An unknown ID gives an error wrapping
// store.ErrNotFound.
func (s *Store) AddSessionBytes(ctx context.Context, id string, in, out int64) error {
	if in < 0 || out < 0 {
		return fmt.Errorf("add session bytes %s: negative count (%d in, %d out)", id, in, out)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET bytes_in = bytes_in + ?, bytes_out = bytes_out + ? WHERE id = ?`,
		in, out, id)
	if err == nil {
		err = mustAffect(res)
	}
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
	err := s.write(ctx, func(tx *sql.Tx) error {
		if len(sealed) == 0 {
			return errors.New("empty recording")
		}
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?)`, sessionID).
			Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return store.ErrNotFound
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO recordings (session_id, data, size) VALUES (?, ?, ?)
			ON CONFLICT (session_id) DO UPDATE SET data = excluded.data, size = excluded.size`,
			sessionID, sealed, len(sealed))
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
	err := s.db.QueryRowContext(ctx, `SELECT data FROM recordings WHERE session_id = ?`, sessionID).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get recording of session %s: %w", sessionID, err)
	}
	return data, nil
}
