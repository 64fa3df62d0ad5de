package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// CreateJoinToken records t and appends ev, in one transaction. t.Hash must
// be a lowercase hex SHA-256 (so that a token passed by mistake is refused
// rather than stored), t.Agent must not be empty and t.ExpiresAt must be
// set. A hash already recorded gives an error wrapping store.ErrExists.
func (s *Store) CreateJoinToken(ctx context.Context, t store.JoinToken, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		switch {
		case !isSHA256Hex(t.Hash):
			return errors.New("the hash is not a lowercase hex SHA-256")
		case t.Agent == "":
			return errors.New("empty agent name")
		case t.ExpiresAt.IsZero():
			return errors.New("no expiry time")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO join_tokens
			(hash, agent, created_by, created_at, expires_at, used_at) VALUES (?, ?, ?, ?, ?, ?)`,
			t.Hash, t.Agent, t.CreatedBy, micros(t.CreatedAt), micros(t.ExpiresAt), nullMicros(t.UsedAt))
		if isDuplicate(err) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		return fmt.Errorf("create join token for agent %s: %w", t.Agent, err)
	}
	return nil
}

// isSHA256Hex reports whether h is 64 lowercase hex digits.
func isSHA256Hex(h string) bool {
	if len(h) != 64 {
		return false
	}
	for _, c := range []byte(h) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ConsumeJoinToken uses the join token whose hash is hash at now, creates
// its agent (or updates the agent's EnrolledAt) and appends ev, in one write
// transaction: the transaction holds the write lock from its start, so of
// several concurrent uses of one token exactly one succeeds, and the UPDATE
// is conditional on the token being unused besides.
//
// The token is refused, with an error fit for the operator, if it is
// unknown (wrapping store.ErrNotFound), already used (store.ErrTokenUsed),
// expired, that is now is not before ExpiresAt (store.ErrTokenExpired), or
// if its agent is locked (store.ErrLocked). A refused token is left as it
// was, and nothing is appended: the caller records the refusal.
//
// It returns the token as used (UsedAt is now).
func (s *Store) ConsumeJoinToken(ctx context.Context, hash string, now time.Time, ev audit.Event) (store.JoinToken, error) {
	now = audit.Normalize(now)
	var t store.JoinToken
	err := s.write(ctx, func(tx *sql.Tx) error {
		var (
			created, expires int64
			used             sql.NullInt64
		)
		t.Hash = hash
		err := tx.QueryRowContext(ctx, `SELECT agent, created_by, created_at, expires_at, used_at
			FROM join_tokens WHERE hash = ?`, hash).Scan(&t.Agent, &t.CreatedBy, &created, &expires, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return store.UnknownJoinToken()
		}
		if err != nil {
			return err
		}
		t.CreatedAt, t.ExpiresAt = fromMicros(created), fromMicros(expires)
		var usedAt time.Time
		if used.Valid {
			usedAt = fromMicros(used.Int64)
		}
		if err := store.CheckJoinToken(t, usedAt, now); err != nil {
			return err
		}
		var locked bool
		err = tx.QueryRowContext(ctx, `SELECT locked FROM agents WHERE name = ?`, t.Agent).Scan(&locked)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if locked {
			return store.AgentLockedForEnrolment(t.Agent)
		}

		res, err := tx.ExecContext(ctx, `UPDATE join_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL`,
			micros(now), hash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			// Not reached while the checks above run in the same write
			// transaction; the condition is the statement's own guard.
			return store.JoinTokenTaken(t.Agent)
		}
		t.UsedAt = now
		if _, err := tx.ExecContext(ctx, `INSERT INTO agents (name, locked, created_at, enrolled_at, last_seen)
			VALUES (?, 0, ?, ?, NULL)
			ON CONFLICT (name) DO UPDATE SET enrolled_at = excluded.enrolled_at`,
			t.Agent, micros(now), micros(now)); err != nil {
			return fmt.Errorf("agent %s: %w", t.Agent, err)
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	var r *store.Refusal
	if errors.As(err, &r) {
		return store.JoinToken{}, err // already says what it is about
	}
	if err != nil {
		return store.JoinToken{}, fmt.Errorf("consume join token: %w", err)
	}
	return t, nil
}

const agentColumns = `name, locked, created_at, enrolled_at, last_seen`

func scanAgent(row scanner) (store.Agent, error) {
	var (
		a                 store.Agent
		created, enrolled int64
		seen              sql.NullInt64
	)
	if err := row.Scan(&a.Name, &a.Locked, &created, &enrolled, &seen); err != nil {
		return store.Agent{}, err
	}
	a.CreatedAt, a.EnrolledAt, a.LastSeen = fromMicros(created), fromMicros(enrolled), fromNullMicros(seen)
	return a, nil
}

// GetAgent returns the agent called name, or an error wrapping
// store.ErrNotFound if it never enrolled.
func (s *Store) GetAgent(ctx context.Context, name string) (store.Agent, error) {
	a, err := scanAgent(s.db.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", name, err)
	}
	return a, nil
}

// ListAgents returns every agent, sorted by name.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	var agents []store.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("list agents: %w", err)
		}
		agents = append(agents, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// SetAgentLocked sets or clears the administrative lock of the agent called
// name and appends ev. An agent that never enrolled gives an error wrapping
// store.ErrNotFound.
func (s *Store) SetAgentLocked(ctx context.Context, name string, locked bool, ev audit.Event) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET locked = ? WHERE name = ?`, locked, name)
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			return err
		}
		return appendEvents(ctx, tx, s.audit, ev)
	})
	if err != nil {
		op := "unlock agent"
		if locked {
			op = "lock agent"
		}
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	s.emit(store.ChangeAgent, name, "")
	return nil
}

// TouchAgent records that the agent called name was connected at seen. The
// agent's LastSeen only moves forward: a touch older than the one recorded
// (from a connection that ended late) leaves it as it is. An unknown agent
// gives an error wrapping store.ErrNotFound. It appends no event: the
// connection's own event records it.
func (s *Store) TouchAgent(ctx context.Context, name string, seen time.Time) error {
	v := micros(seen)
	res, err := s.db.ExecContext(ctx, `UPDATE agents
		SET last_seen = CASE WHEN last_seen IS NULL OR last_seen < ? THEN ? ELSE last_seen END
		WHERE name = ?`, v, v, name)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("touch agent %s: %w", name, err)
	}
	return nil
}
