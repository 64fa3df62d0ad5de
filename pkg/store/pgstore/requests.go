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

const requestColumns = `id, user_name, role_name, reason, duration, state, created_at, pending_until,
	decided_at, decided_by, comment, starts_at, ends_at, ended_at, ended_by, end_reason`

func scanRequest(row pgx.Row) (store.AccessRequest, error) {
	var (
		r                            store.AccessRequest
		dur                          int64
		state                        string
		created, pendingUntil        time.Time
		decided, starts, ends, ended *time.Time
	)
	if err := row.Scan(&r.ID, &r.User, &r.Role, &r.Reason, &dur, &state, &created, &pendingUntil,
		&decided, &r.DecidedBy, &r.Comment, &starts, &ends, &ended, &r.EndedBy, &r.EndReason); err != nil {
		return store.AccessRequest{}, err
	}
	r.Duration, r.State = time.Duration(dur), store.RequestState(state)
	r.CreatedAt, r.PendingUntil = utc(created), utc(pendingUntil)
	r.DecidedAt, r.Start, r.End, r.EndedAt = fromNull(decided), fromNull(starts), fromNull(ends), fromNull(ended)
	return r, nil
}

// getRequest reads the request id; lock is "" or " FOR NO KEY UPDATE".
func getRequest(ctx context.Context, db querier, id, lock string) (store.AccessRequest, error) {
	r, err := scanRequest(db.QueryRow(ctx, `SELECT `+requestColumns+` FROM access_requests WHERE id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.AccessRequest{}, store.ErrNotFound
	}
	return r, err
}

// CreateRequest records the new pending request r and appends ev, in one
// transaction. A duplicate ID gives an error wrapping store.ErrExists; an
// unknown user or role one wrapping store.ErrNotFound.
func (s *Store) CreateRequest(ctx context.Context, r store.AccessRequest, ev audit.Event) error {
	if r.State == "" {
		r.State = store.RequestPending
	}
	if err := store.CheckRequest(r); err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var userOK, roleOK bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE name = $1),
				EXISTS (SELECT 1 FROM roles WHERE name = $2)`, r.User, r.Role).Scan(&userOK, &roleOK); err != nil {
			return err
		}
		switch {
		case !userOK:
			return fmt.Errorf("user %s: %w", r.User, store.ErrNotFound)
		case !roleOK:
			return fmt.Errorf("role %s: %w", r.Role, store.ErrNotFound)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO access_requests (`+requestColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, '', '', NULL, NULL, NULL, '', '') ON CONFLICT (id) DO NOTHING`,
			r.ID, r.User, r.Role, clean(r.Reason), int64(r.Duration), string(r.State), ts(r.CreatedAt), ts(r.PendingUntil))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		if err := s.notify(ctx, tx, store.ChangeRequest, r.ID, r.User); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("create request %s: %w", r.ID, err)
	}
	return nil
}

// GetRequest returns the request id, or an error wrapping
// store.ErrNotFound.
func (s *Store) GetRequest(ctx context.Context, id string) (store.AccessRequest, error) {
	var r store.AccessRequest
	err := s.read(ctx, func(db querier) error {
		var err error
		r, err = getRequest(ctx, db, id, "")
		return err
	})
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
		args = append(args, f.User)
		conds = append(conds, fmt.Sprintf(`user_name = $%d`, len(args)))
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		args = append(args, states)
		conds = append(conds, fmt.Sprintf(`state = ANY($%d)`, len(args)))
	}
	if len(conds) > 0 {
		q.WriteString(` WHERE ` + strings.Join(conds, ` AND `))
	}
	q.WriteString(` ORDER BY created_at DESC, id DESC`)
	if f.Limit > 0 {
		args = append(args, f.Limit)
		fmt.Fprintf(&q, ` LIMIT $%d`, len(args))
	}
	list, err := s.queryRequests(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	return list, nil
}

func (s *Store) queryRequests(ctx context.Context, query string, args ...any) ([]store.AccessRequest, error) {
	var list []store.AccessRequest
	err := s.read(ctx, func(db querier) error {
		list = nil
		rows, err := db.Query(ctx, query, args...)
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
// in one transaction. The row is locked (FOR NO KEY UPDATE) before its
// state is read, so of two decisions on two gateways the second waits for
// the first and then finds it decided: it gets an error wrapping
// store.ErrNotPending, with the request as the first left it.
func (s *Store) DecideRequest(ctx context.Context, id string, d store.RequestDecision, ev audit.Event) (store.AccessRequest, error) {
	if err := store.CheckDecision(d); err != nil {
		return store.AccessRequest{}, fmt.Errorf("decide request %s: %w", id, err)
	}
	var r store.AccessRequest
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var err error
		if r, err = getRequest(ctx, tx, id, " FOR NO KEY UPDATE"); err != nil {
			return err
		}
		if r.State != store.RequestPending {
			return fmt.Errorf("it is %s: %w", r.State, store.ErrNotPending)
		}
		tag, err := tx.Exec(ctx, `UPDATE access_requests SET state = $2, decided_at = $3, decided_by = $4, comment = $5,
			starts_at = $6, ends_at = $7 WHERE id = $1 AND state = 'pending'`,
			id, string(d.State), ts(d.At), d.By, clean(d.Comment), nullTS(d.Start), nullTS(d.End))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("the request changed while it was being decided: %w", store.ErrNotPending)
		}
		if r, err = getRequest(ctx, tx, id, ""); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, store.ChangeRequest, id, r.User); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("decide request %s: %w", id, err)
	}
	return r, nil
}

// EndRequest ends the request id (revoked or expired) and appends ev, in
// one transaction; see store.RequestStore. The row is locked before its
// state is read, so of two ends (the timers of two gateways, say) the
// first wins and the second changes nothing.
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
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var err error
		changed = false
		if r, err = getRequest(ctx, tx, id, " FOR NO KEY UPDATE"); err != nil {
			return err
		}
		if !(r.State == store.RequestApproved || r.State == store.RequestPending && state == store.RequestExpired) {
			return nil // unchanged, no event
		}
		if _, err := tx.Exec(ctx, `UPDATE access_requests SET state = $2, ended_at = $3, ended_by = $4, end_reason = $5
			WHERE id = $1`, id, string(state), at, by, clean(reason)); err != nil {
			return err
		}
		if r, err = getRequest(ctx, tx, id, ""); err != nil {
			return err
		}
		changed = true
		if err := s.notify(ctx, tx, store.ChangeRequest, id, r.User); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		return store.AccessRequest{}, false, fmt.Errorf("end request %s: %w", id, err)
	}
	return r, changed, nil
}

// ActiveGrants returns the approved requests of user whose window holds
// now, by End.
func (s *Store) ActiveGrants(ctx context.Context, user string, now time.Time) ([]store.AccessRequest, error) {
	n := ts(now)
	list, err := s.queryRequests(ctx, `SELECT `+requestColumns+` FROM access_requests
		WHERE user_name = $1 AND state = 'approved' AND starts_at <= $2 AND ends_at > $2 ORDER BY ends_at, id`, user, n)
	if err != nil {
		return nil, fmt.Errorf("active grants of %s: %w", user, err)
	}
	return list, nil
}
