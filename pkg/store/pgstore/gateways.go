package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// UpsertGateway records a gateway's heartbeat in one statement, inserting
// or replacing its row.
func (s *Store) UpsertGateway(ctx context.Context, g store.Gateway) error {
	if g.ID == "" {
		return errors.New("record gateway: empty id")
	}
	err := s.read(ctx, func(q querier) error { // one idempotent statement
		_, err := q.Exec(ctx, `INSERT INTO gateways (id, api_addr, quic_addr, ssh_addr, version, started_at, heartbeat_at, alive_for)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (id) DO UPDATE SET api_addr = EXCLUDED.api_addr, quic_addr = EXCLUDED.quic_addr,
				ssh_addr = EXCLUDED.ssh_addr, version = EXCLUDED.version, started_at = EXCLUDED.started_at,
				heartbeat_at = EXCLUDED.heartbeat_at, alive_for = EXCLUDED.alive_for`,
			clean(g.ID), clean(g.APIAddr), clean(g.QUICAddr), clean(g.SSHAddr), clean(g.Version),
			ts(g.StartedAt), ts(g.HeartbeatAt), int64(g.AliveFor))
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
	err := s.read(ctx, func(q querier) error {
		out = nil
		rows, err := q.Query(ctx, `SELECT id, api_addr, quic_addr, ssh_addr, version, started_at, heartbeat_at, alive_for
			FROM gateways ORDER BY id`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Gateway, error) {
			var g store.Gateway
			var alive int64
			err := row.Scan(&g.ID, &g.APIAddr, &g.QUICAddr, &g.SSHAddr, &g.Version, &g.StartedAt, &g.HeartbeatAt, &alive)
			g.AliveFor = time.Duration(alive)
			g.StartedAt, g.HeartbeatAt = utc(g.StartedAt), utc(g.HeartbeatAt)
			return g, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// DeleteGateway removes the gateway id, if recorded.
func (s *Store) DeleteGateway(ctx context.Context, id string) error {
	err := s.read(ctx, func(q querier) error { // idempotent
		_, err := q.Exec(ctx, `DELETE FROM gateways WHERE id = $1`, clean(id))
		return err
	})
	if err != nil {
		return fmt.Errorf("remove gateway %s: %w", id, err)
	}
	return nil
}
