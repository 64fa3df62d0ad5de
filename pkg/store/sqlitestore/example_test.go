package sqlitestore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

func ExampleOpen() {
	ctx := context.Background()
	dataDir, err := os.MkdirTemp("", "gateway")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dataDir)

	st, err := sqlitestore.Open(ctx, filepath.Join(dataDir, "gateway.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	// Every change comes with the audit event that records it.
	now := time.Now()
	err = st.CreateRole(ctx, store.Role{Name: "ops", Logins: []string{"ubuntu"}, MaxTTL: 8 * time.Hour, CreatedAt: now},
		audit.Event{Time: now, Type: audit.RoleCreated, Actor: "admin", Subject: "ops", Outcome: audit.Success})
	if err != nil {
		log.Fatal(err)
	}

	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		log.Fatal(err)
	}
	head, err := st.AuditHead(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(evs), evs[0].Type, audit.Verify(evs, head))
	// Output: 1 role.created <nil>
}
