package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tunnelhq/tunnel/gateway/internal/metrics"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/pgstore"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// storeOptions say which store a gateway opens.
type storeOptions struct {
	dataDir  string
	url      string // PostgreSQL URL; "" for SQLite in dataDir
	insecure bool
	sync     string
	origin   string // the gateway id carried by the store's changes
}

// isPostgres reports whether url names a PostgreSQL store.
func isPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// checkStoreURL refuses a --store that is neither empty nor PostgreSQL.
func checkStoreURL(url string) error {
	if url != "" && !isPostgres(url) {
		return errors.New("--store: give a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=/path/to/ca.pem), or leave it out for SQLite in the data directory")
	}
	return nil
}

// describeStore names the store for messages, without credentials.
func describeStore(o storeOptions) string {
	if o.url == "" {
		return filepath.Join(o.dataDir, DBFile)
	}
	return pgstore.Describe(o.url)
}

// openStore opens the gateway's store. An unreachable PostgreSQL gives
// "the gateway cannot reach its store: ...". The store is wrapped for the
// metrics (every call timed, its audit events counted: metrics.Store);
// metrics.Unwrap gives the concrete store back.
func openStore(ctx context.Context, o storeOptions) (store.Store, error) {
	if o.url == "" {
		opts := sqlitestore.Options{Origin: o.origin}
		if o.sync == "full" {
			opts.Sync = sqlitestore.SyncFull
		}
		st, err := sqlitestore.OpenWith(ctx, filepath.Join(o.dataDir, DBFile), opts)
		if err != nil {
			return nil, err
		}
		return metrics.Wrap(st, metrics.Prefix), nil
	}
	st, err := pgstore.OpenWith(ctx, o.url, pgstore.Options{Insecure: o.insecure, Origin: o.origin})
	if err != nil {
		return nil, storeError(err)
	}
	return metrics.Wrap(st, metrics.Prefix), nil
}

// storeError words an ErrUnavailable for a person; other errors pass.
func storeError(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("the gateway cannot reach its store: %w", err)
	}
	return err
}

// kekError explains a KEK that does not open the cluster's sealed keys: with
// several gateways, the usual cause is a KEK created on this host instead of
// copied from the first gateway.
func kekError(kekFile string, err error) error {
	if errors.Is(err, seal.ErrOpen) {
		return fmt.Errorf("this KEK (%s) does not open the cluster's keys: copy the KEK file from the first gateway (its data directory's kek, or its --kek-file): %w", kekFile, err)
	}
	return err
}

// hostname is the default gateway id.
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "gateway"
	}
	return h
}
