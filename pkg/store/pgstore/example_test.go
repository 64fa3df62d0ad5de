package pgstore_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/pgstore"
)

// Open needs a PostgreSQL server, so this example is compiled but not run.
func ExampleOpen() {
	ctx := context.Background()
	st, err := pgstore.Open(ctx,
		"postgres://tunnel:PASSWORD@db.internal:5432/tunnel?sslmode=verify-full&sslrootcert=/etc/tunnel/pg-ca.pem")
	if pgstore.IsUnavailable(err) {
		log.Fatalf("the gateway cannot reach its store: %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	// Every change comes with the audit event that records it, in one
	// transaction, whichever gateway makes it.
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
	fmt.Println(audit.Verify(evs, head))
}
