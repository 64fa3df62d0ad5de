package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// TestFanoutReloadsCA: a CA key added to the store by another gateway (a
// rotation's start) is trusted here as soon as the change arrives, and so
// is one this gateway added; the CA keys are read again only when they
// changed.
func TestFanoutReloadsCA(t *testing.T) {
	ctx := t.Context()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), DBFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := seal.NewAESGCM(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := certs.Generate(certs.Config{Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := gen.Export(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Initialize(ctx, map[string]string{"cluster": "prod"}, keys, testEvent(audit.ClusterInit, "prod")); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.Load(certs.Config{Cluster: "prod"}, keys, s)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{ca: ca, store: st, cfg: Config{Log: slog.New(slog.DiscardHandler)}}
	f := &fanout{self: "gw-b", store: st, interval: time.Hour, clock: time.Now, log: slog.New(slog.DiscardHandler), ca: g.reloadCA}
	wctx, stop := context.WithCancel(ctx)
	ch, err := st.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(wctx, ch)
	}()
	defer func() { stop(); <-done }()

	k, err := ca.NewCAKey(store.CertSSHUser, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.CreatedAt = time.Now().Add(time.Minute)
	if err := st.AddCAKey(ctx, k, testEvent(audit.CARotationStarted, "ssh-user")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(ca.SSHUserCAs()) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after a CA key was added the gateway trusts %d user CAs; want 2", len(ca.SSHUserCAs()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Equal(ca.SSHUserCAs()[1].Marshal(), k.Public) {
		t.Fatal("the second trusted user CA is not the new key")
	}
	gen1 := ca.Generation()
	f.reconcile(ctx, false) // nothing changed: no reload
	if ca.Generation() != gen1 {
		t.Fatalf("a sweep with unchanged keys reloaded them (generation %d, was %d)", ca.Generation(), gen1)
	}
}
