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

const requestColumns = `id, user_name, role_name, reason, duration, state, created_at, pending_until,
	decided_at, decided_by, comment, starts_at, ends_at, ended_at, ended_by, end_reason`

func scanRequest(row scanner) (store.AccessRequest, error) {
	var (
		r                                   store.AccessRequest
		dur, created, pendingUntil          int64
		state                               string
		decided, starts, ends, endedAtMicro sql.NullInt64
	)
	if err := row.Scan(&r.ID, &r.User, &r.Role, &r.Reason, &dur, &state, &created, &pendingUntil,
		&decided, &r.DecidedBy, &r.Comment, &starts, &ends, &endedAtMicro, &r.EndedBy, &r.EndReason); err != nil {
		return store.AccessRequest{}, err
	}
	r.Duration, r.State = time.Duration(dur), store.RequestState(state)
	r.CreatedAt, r.PendingUntil = fromMicros(created), fromMicros(pendingUntil)
	r.DecidedAt, r.Start, r.End, r.EndedAt = fromNullMicros(decided), fromNullMicros(starts), fromNullMicros(ends), fromNullMicros(endedAtMicro)
	return r, nil
}

func getRequest(ctx context.Context, q queryer, id string) (store.AccessRequest, error) {
	r, err := scanRequest(q.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM access_requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.AccessRequest{}, store.ErrNotFound
	}
	return r, err
}

// CreateRequest records the new pending request r and appends ev, in one
// write transaction. A duplicate ID gives an error wrapping
// store.ErrExists; an unknown user or role one wrapping store.ErrNotFound.
func (s *Store) CreateRequest(ctx context.Context, r store.AccessRequest, ev audit.Event) error {
	if r.State == "" {
		r.State = store.RequestPending
	}
	if err := store.CheckRequest(r); err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, c := range []struct{ table, what, name string }{{"users", "user", r.User}, {"roles", "role", r.Role}} {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+c.table+` WHERE name = ?`, c.name).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("%s %s: %w", c.what, c.name, store.ErrNotFound)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO access_requests (`+requestColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, '', '', NULL, NULL, NULL, '', '')`,
			r.ID, r.User, r.Role, r.Reason, int64(r.Duration), string(r.State), micros(r.CreatedAt), micros(r.PendingUntil))
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	s.emit(store.ChangeRequest, r.ID, r.User)
	return nil
}

// GetRequest returns the request id, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetRequest(ctx context.Context, id string) (store.AccessRequest, error) {
	r, err := getRequest(ctx, s.db, id)
	if err != nil {
		return store.AccessRequest{}, fmt.Errorf("get request %s: %w", id, err)
	}
	return r, nil
}

// ListRequests returns the requests f selects, newest first (then by ID,
// descending).
func (s *Store) ListRequests(ctx context.Context, f store.RequestFilter) ([]store.AccessRequest, error) {
	var (
		q     strings.Builder
		conds []string
		args  []any
	)
	q.WriteString(`SELECT ` + requestColumns + ` FROM access_requests`)
	if f.User != "" {
		conds, args = append(conds, `user_name = ?`), append(args, f.User)
	}
	if len(f.States) > 0 {
		marks := make([]string, len(f.States))
		for i, st := range f.States {
			marks[i] = "?"
			args = append(args, string(st))
		}
		conds = append(conds, `state IN (`+strings.Join(marks, ", ")+`)`)
	}
	if len(conds) > 0 {
		q.WriteString(` WHERE ` + strings.Join(conds, ` AND `))
	}
	q.WriteString(` ORDER BY created_at DESC, id DESC`)
	if f.Limit > 0 {
		q.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	list, err := s.queryRequests(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	return list, nil
}

func (s *Store) queryRequests(ctx context.Context, query string, args ...any) ([]store.AccessRequest, error) {
	var list []store.AccessRequest
	err := s.read(ctx, func(tx *sql.Tx) error {
		list = nil
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRequest(rows)
			if err != nil {
				return err
			}
			list = append(list, r)
		}
		return rows.Err()
	})
	return list, err
}

// DecideRequest approves or denies the pending request id and appends ev,
// in one write transaction: SQLite serialises writers, so of two
// decisions the second finds the request decided and gets an error
// wrapping store.ErrNotPending, with the request as the first left it.
func (s *Store) DecideRequest(ctx context.Context, id string, d store.RequestDecision, ev audit.Event) (store.AccessRequest, error) {
	if err := store.CheckDecision(d); err != nil {
		return store.AccessRequest{}, fmt.Errorf("decide request %s: %w", id, err)
	}
	var r store.AccessRequest
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if r, err = getRequest(ctx, tx, id); err != nil {
			return err
		}
		if r.State != store.RequestPending {
			return fmt.Errorf("it is %s: %w", r.State, store.ErrNotPending)
		}
		res, err := tx.ExecContext(ctx, `UPDATE access_requests SET state = ?, decided_at = ?, decided_by = ?, comment = ?,
			starts_at = ?, ends_at = ? WHERE id = ? AND state = ?`,
			string(d.State), micros(d.At), d.By, d.Comment, nullMicros(d.Start), nullMicros(d.End), id, string(store.RequestPending))
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err // not reached: the write transaction holds the lock
		}
		if r, err = getRequest(ctx, tx, id); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return r, fmt.Errorf("decide request %s: %w", id, err)
	}
	s.emit(store.ChangeRequest, r.ID, r.User)
	return r, nil
}

// EndRequest ends the request id (revoked or expired) and appends ev, in
// one write transaction; see store.RequestStore.
func (s *Store) EndRequest(ctx context.Context, id string, state store.RequestState, by, reason string, at time.Time, ev audit.Event) (store.AccessRequest, bool, error) {
	at = audit.Normalize(at)
	if state != store.RequestRevoked && state != store.RequestExpired {
		return store.AccessRequest{}, false, fmt.Errorf("end request %s: cannot end a request as %q", id, state)
	}
	if at.IsZero() || by == "" {
		return store.AccessRequest{}, false, fmt.Errorf("end request %s: no end time or no one ending it", id)
	}
	var (
		r       store.AccessRequest
		changed bool
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		changed = false
		if r, err = getRequest(ctx, tx, id); err != nil {
			return err
		}
		if !endable(r.State, state) {
			return nil // unchanged, no event
		}
		if _, err := tx.ExecContext(ctx, `UPDATE access_requests SET state = ?, ended_at = ?, ended_by = ?, end_reason = ?
			WHERE id = ?`, string(state), micros(at), by, reason, id); err != nil {
			return err
		}
		if r, err = getRequest(ctx, tx, id); err != nil {
			return err
		}
		changed = true
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return store.AccessRequest{}, false, fmt.Errorf("end request %s: %w", id, err)
	}
	if changed {
		s.emit(store.ChangeRequest, r.ID, r.User)
	}
	return r, changed, nil
}

// endable reports whether a request in state cur may end in state to.
func endable(cur, to store.RequestState) bool {
	return cur == store.RequestApproved || cur == store.RequestPending && to == store.RequestExpired
}

// ActiveGrants returns the approved requests of user whose window holds
// now, by End.
func (s *Store) ActiveGrants(ctx context.Context, user string, now time.Time) ([]store.AccessRequest, error) {
	n := micros(audit.Normalize(now))
	list, err := s.queryRequests(ctx, `SELECT `+requestColumns+` FROM access_requests
		WHERE user_name = ? AND state = ? AND starts_at <= ? AND ends_at > ? ORDER BY ends_at, id`,
		user, string(store.RequestApproved), n, n)
	if err != nil {
		return nil, fmt.Errorf("active grants of %s: %w", user, err)
	}
	return list, nil
}
