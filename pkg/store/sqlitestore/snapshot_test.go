package sqlitestore

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/storetest"
)

func TestSnapshotRestore(t *testing.T) {
	storetest.RunRestore(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t)
		return s
	}, func(t *testing.T, r io.Reader) (store.Store, error) {
		path := filepath.Join(t.TempDir(), "gateway.db")
		if err := Restore(t.Context(), path, r); err != nil {
			if _, serr := os.Stat(path); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("a failed restore left %s behind", path)
			}
			return nil, err
		}
		s, err := Open(t.Context(), path)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { s.Close() })
		return s, nil
	})
}

func TestRestoreRefusesExisting(t *testing.T) {
	_, path := openTemp(t)
	err := Restore(t.Context(), path, nil)
	if !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Restore over an existing database: %v; want ErrNotEmpty", err)
	}
}
