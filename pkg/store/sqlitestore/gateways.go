package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// UpsertGateway records a gateway's heartbeat, inserting or replacing its
// row.
func (s *Store) UpsertGateway(ctx context.Context, g store.Gateway) error {
	if g.ID == "" {
		return errors.New("record gateway: empty id")
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO gateways (id, api_addr, quic_addr, ssh_addr, version, started_at, heartbeat_at, alive_for)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET api_addr = excluded.api_addr, quic_addr = excluded.quic_addr,
				ssh_addr = excluded.ssh_addr, version = excluded.version, started_at = excluded.started_at,
				heartbeat_at = excluded.heartbeat_at, alive_for = excluded.alive_for`,
			g.ID, g.APIAddr, g.QUICAddr, g.SSHAddr, g.Version, micros(g.StartedAt), micros(g.HeartbeatAt), int64(g.AliveFor))
		return err
	})
	if err != nil {
		return fmt.Errorf("record gateway %s: %w", g.ID, err)
	}
	return nil
}

// ListGateways returns every gateway recorded, by ID.
func (s *Store) ListGateways(ctx context.Context) ([]store.Gateway, error) {
	var out []store.Gateway
	err := s.read(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `SELECT id, api_addr, quic_addr, ssh_addr, version, started_at, heartbeat_at, alive_for
			FROM gateways ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g store.Gateway
			var started, beat, alive int64
			if err := rows.Scan(&g.ID, &g.APIAddr, &g.QUICAddr, &g.SSHAddr, &g.Version, &started, &beat, &alive); err != nil {
				return err
			}
			g.StartedAt, g.HeartbeatAt, g.AliveFor = fromMicros(started), fromMicros(beat), time.Duration(alive)
			out = append(out, g)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	return out, nil
}

// DeleteGateway removes the gateway id, if recorded.
func (s *Store) DeleteGateway(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM gateways WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove gateway %s: %w", id, err)
	}
	return nil
}

// Watch returns the changes this store commits from now on. A SQLite file
// has one gateway, so the changes are those of this process, delivered
// in-process after each commit.
func (s *Store) Watch(ctx context.Context) (<-chan store.Change, error) {
	return s.changes.Subscribe(ctx)
}

// emit publishes a committed change to the watchers.
func (s *Store) emit(kind store.ChangeKind, id, subject string) {
	s.changes.Publish(store.Change{Kind: kind, ID: id, Subject: subject, Origin: s.origin})
}
