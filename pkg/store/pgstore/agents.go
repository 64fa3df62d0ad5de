package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// CreateJoinToken records t and appends ev, in one transaction. t.Hash must
// be a lowercase hex SHA-256 (so that a token passed by mistake is refused
// rather than stored), t.Agent must not be empty and t.ExpiresAt must be
// set. A hash already recorded gives an error wrapping store.ErrExists.
func (s *Store) CreateJoinToken(ctx context.Context, t store.JoinToken, ev audit.Event) error {
	var bad string
	switch {
	case !isSHA256Hex(t.Hash):
		bad = "the hash is not a lowercase hex SHA-256"
	case t.Agent == "":
		bad = "empty agent name"
	case t.ExpiresAt.IsZero():
		bad = "no expiry time"
	}
	if bad != "" {
		return fmt.Errorf("create join token for agent %s: %s", t.Agent, bad)
	}
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `INSERT INTO join_tokens (hash, agent, created_by, created_at, expires_at, used_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO NOTHING`,
			t.Hash, t.Agent, t.CreatedBy, ts(t.CreatedAt), ts(t.ExpiresAt), nullTS(t.UsedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		_, err = log.append(ctx, ev)
		return err
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
// its agent (or updates the agent's EnrolledAt) and appends ev, in one
// transaction. The transaction holds the audit head from its start, so of
// several concurrent uses of one token, on any gateways, exactly one
// succeeds; the UPDATE is conditional on the token being unused besides.
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
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		var (
			created, expires time.Time
			used             *time.Time
		)
		t = store.JoinToken{Hash: hash}
		err := tx.QueryRow(ctx, `SELECT agent, created_by, created_at, expires_at, used_at
			FROM join_tokens WHERE hash = $1 FOR UPDATE`, hash).Scan(&t.Agent, &t.CreatedBy, &created, &expires, &used)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.UnknownJoinToken()
		}
		if err != nil {
			return err
		}
		t.CreatedAt, t.ExpiresAt = utc(created), utc(expires)
		var usedAt time.Time
		if used != nil {
			usedAt = *used
		}
		if err := store.CheckJoinToken(t, usedAt, now); err != nil {
			return err
		}
		var locked bool
		err = tx.QueryRow(ctx, `SELECT locked FROM agents WHERE name = $1`, t.Agent).Scan(&locked)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if locked {
			return store.AgentLockedForEnrolment(t.Agent)
		}

		tag, err := tx.Exec(ctx, `UPDATE join_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL`, hash, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			// Not reached while the row is locked since the SELECT; the
			// condition is the statement's own guard.
			return store.JoinTokenTaken(t.Agent)
		}
		t.UsedAt = now
		if _, err := tx.Exec(ctx, `INSERT INTO agents (name, locked, created_at, enrolled_at, last_seen)
			VALUES ($1, false, $2, $2, NULL)
			ON CONFLICT (name) DO UPDATE SET enrolled_at = excluded.enrolled_at`, t.Agent, now); err != nil {
			return fmt.Errorf("agent %s: %w", t.Agent, err)
		}
		_, err = log.append(ctx, ev)
		return err
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

func scanAgent(row pgx.Row) (store.Agent, error) {
	var (
		a                 store.Agent
		created, enrolled time.Time
		seen              *time.Time
	)
	if err := row.Scan(&a.Name, &a.Locked, &created, &enrolled, &seen); err != nil {
		return store.Agent{}, err
	}
	a.CreatedAt, a.EnrolledAt, a.LastSeen = utc(created), utc(enrolled), fromNull(seen)
	return a, nil
}

// GetAgent returns the agent called name, or an error wrapping
// store.ErrNotFound if it never enrolled.
func (s *Store) GetAgent(ctx context.Context, name string) (store.Agent, error) {
	var a store.Agent
	err := s.read(ctx, func(db querier) error {
		var err error
		a, err = scanAgent(db.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE name = $1`, name))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", name, err)
	}
	return a, nil
}

// ListAgents returns every agent, sorted by name.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	var agents []store.Agent
	err := s.read(ctx, func(db querier) error {
		agents = nil
		rows, err := db.Query(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAgent(rows)
			if err != nil {
				return err
			}
			agents = append(agents, a)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// SetAgentLocked sets or clears the administrative lock of the agent called
// name and appends ev. An agent that never enrolled gives an error wrapping
// store.ErrNotFound.
func (s *Store) SetAgentLocked(ctx context.Context, name string, locked bool, ev audit.Event) error {
	err := s.audited(ctx, func(tx pgx.Tx, log *chain) error {
		tag, err := tx.Exec(ctx, `UPDATE agents SET locked = $2 WHERE name = $1`, name, locked)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if err := s.notify(ctx, tx, store.ChangeAgent, name, ""); err != nil {
			return err
		}
		_, err = log.append(ctx, ev)
		return err
	})
	if err != nil {
		op := "unlock agent"
		if locked {
			op = "lock agent"
		}
		return fmt.Errorf("%s %s: %w", op, name, err)
	}
	return nil
}

// TouchAgent records that the agent called name was connected at seen. The
// agent's LastSeen only moves forward (GREATEST ignores the NULL of an agent
// never seen): a touch older than the one recorded, from a connection that
// ended late or another gateway, leaves it as it is. An unknown agent gives
// an error wrapping store.ErrNotFound. It appends no event: the
// connection's own event records it.
func (s *Store) TouchAgent(ctx context.Context, name string, seen time.Time) error {
	// One statement, no transaction: it appends no audit event, and it
	// runs at every agent connection (one round trip, not three).
	// GREATEST makes it safe to run twice.
	err := s.retry(ctx, func() (error, bool) {
		tag, err := s.pool.Exec(ctx, `UPDATE agents SET last_seen = GREATEST(last_seen, $2) WHERE name = $1`, name, ts(seen))
		if err == nil && tag.RowsAffected() == 0 {
			err = store.ErrNotFound
		}
		return err, true
	})
	if err != nil {
		return fmt.Errorf("touch agent %s: %w", name, err)
	}
	return nil
}
