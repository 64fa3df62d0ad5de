package storetest

import (
	"testing"

	"github.com/tunnelhq/tunnel/pkg/store"
)

func testRequests(t *testing.T, s store.Store) { t.Skip("not yet written") }
