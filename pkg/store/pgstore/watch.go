package pgstore

import (
	"context"
	"encoding/json"
	"net"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// ChangesChannel is the PostgreSQL NOTIFY channel that carries changes
// (store.Change as JSON) between the gateways sharing a database.
const ChangesChannel = "tunnel_changes"

// Reconnect backoff of the LISTEN connection.
const (
	listenMinBackoff = 250 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
)

// notify emits a change inside tx: PostgreSQL delivers it to every
// listening gateway when tx commits, and never if it rolls back.
func (s *Store) notify(ctx context.Context, tx pgx.Tx, kind store.ChangeKind, id, subject string) error {
	b, err := json.Marshal(store.Change{Kind: kind, ID: clean(id), Subject: clean(subject), Origin: s.origin})
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ChangesChannel, string(b))
	return err
}

// Watch returns the changes committed from now on by every gateway sharing
// the database. They arrive over one dedicated connection per Store (not
// one of the pool's), which LISTENs on ChangesChannel; the first Watch
// opens it and waits, until ctx ends, for its LISTEN to be in place. When
// that connection breaks, it is opened again with a backoff (250 ms to
// 5 s), and every watcher then receives a store.ChangeResync, since
// notifications sent meanwhile are lost.
func (s *Store) Watch(ctx context.Context) (<-chan store.Change, error) {
	ch, err := s.changes.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	s.listenOnce.Do(func() {
		s.listenReady = make(chan struct{})
		s.listenWG.Add(1)
		go s.listen()
	})
	select {
	case <-s.listenReady:
	case <-ctx.Done():
	}
	return ch, nil
}

// listen keeps a LISTEN connection until the store closes, publishing what
// it receives.
func (s *Store) listen() {
	defer s.listenWG.Done()
	ctx := s.listenCtx
	backoff := listenMinBackoff
	first := true
	readyOnce := func() {
		if first {
			first = false
			close(s.listenReady)
		}
	}
	defer readyOnce()
	for ctx.Err() == nil {
		// A failure is counted (ListenReconnects) and retried; the store has
		// no logger, and every call made meanwhile reports the outage.
		if conn, err := s.listenConn(ctx); err == nil {
			if !first {
				// Whatever was sent while the connection was down is
				// lost.
				s.changes.Publish(store.Change{Kind: store.ChangeResync})
			}
			readyOnce()
			backoff = listenMinBackoff
			_ = s.receive(ctx, conn) // returns when the connection fails
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		s.listenErrs.Add(1)
		if first {
			// Open has just reached the database: let Watch return and
			// treat the first success as a reconnection (Resync).
			readyOnce()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// listenConn opens the LISTEN connection, with TCP keepalives short enough
// to notice a silent network failure within a minute.
func (s *Store) listenConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.connCfg.Copy()
	d := &net.Dialer{KeepAlive: 15 * time.Second, Timeout: DefaultConnectTimeout}
	cfg.DialFunc = d.DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ChangesChannel}.Sanitize()); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = conn.Close(cctx)
		cancel()
		return nil, err
	}
	return conn, nil
}

// receive publishes the notifications conn receives until it fails or ctx
// ends.
func (s *Store) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var c store.Change
		if err := json.Unmarshal([]byte(n.Payload), &c); err != nil || c.Kind == "" {
			// Not ours (or a newer gateway's format): reconcile rather
			// than guess.
			c = store.Change{Kind: store.ChangeResync}
		}
		s.changes.Publish(c)
	}
}

// ListenReconnects returns how many times the LISTEN connection failed (to
// open or while open) since the store opened; for tests and metrics.
func (s *Store) ListenReconnects() int64 { return s.listenErrs.Load() }
