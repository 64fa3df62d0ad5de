package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// certKiller is a fakeKiller that can also end connections by certificate.
type certKiller struct{ fakeKiller }

func (k *certKiller) EndCerts(revoked []store.IssuedCert) int {
	for _, c := range revoked {
		k.add("cert " + string(c.Kind) + " " + c.Serial + " of " + c.Subject)
	}
	return len(revoked)
}

// TestFanoutEndsRevokedCertificates: a certificate revoked on another
// gateway (an agent enrolled again there) closes what it authenticated
// here, through the store's change, as does one revoked here; the
// reconciliation sweep closes what the whole deny list
// still holds open.
func TestFanoutEndsRevokedCertificates(t *testing.T) {
	ctx := t.Context()
	st := fanoutFixture(t, time.Now().Add(time.Hour))
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.RecordCertificates(ctx, []store.IssuedCert{
		{Serial: "a1", Kind: store.CertX509, Subject: "web1", SubjectKind: identity.Agent, NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now},
		{Serial: "b2", Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User, NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now},
	}, nil))
	k := &certKiller{}
	var reevals int
	f := newTestFanout(st, &k.fakeKiller, &reevals)
	f.killers = append(f.killers, k)
	wctx, stop := context.WithCancel(ctx)
	ch, err := st.Watch(wctx)
	must(err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(wctx, ch)
	}()
	defer func() { stop(); <-done }()

	// The store's own change (its origin is not this gateway's).
	_, err = st.RevokeCertificates(ctx, store.RevokeFilter{Subject: "web1", SubjectKind: identity.Agent}, time.Now(),
		testEvent(audit.CertRevoked, "web1"))
	must(err)
	want := "cert x509 a1 of web1"
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(k.calls(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("a revoked agent certificate closed nothing here within 30s: %v", k.calls())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done

	// Applied directly: a malformed ID closes nothing; a certificate
	// revoked on gw-a, and one revoked here (this gateway's own change:
	// its caller closed by name, this closes by certificate what escaped
	// that), close what they authenticated.
	before := len(k.calls())
	f.apply(ctx, store.Change{Kind: store.ChangeCert, ID: "b2", Subject: "alice", Origin: "gw-a"})
	if got := k.calls()[before:]; len(got) != 0 {
		t.Fatalf("a malformed certificate change closed %v", got)
	}
	f.apply(ctx, store.Change{Kind: store.ChangeCert, ID: store.CertChangeID(store.CertSSHUser, "b2"), Subject: "alice", Origin: "gw-a"})
	if got := k.calls()[before:]; !slices.Equal(got, []string{"cert ssh-user b2 of alice"}) {
		t.Fatalf("a certificate revoked on gw-a closed %v here; want b2 of alice", got)
	}
	before = len(k.calls())
	f.apply(ctx, store.Change{Kind: store.ChangeCert, ID: store.CertChangeID(store.CertX509, "c3"), Subject: "bob", Origin: "gw-b"})
	if got := k.calls()[before:]; !slices.Equal(got, []string{"cert x509 c3 of bob"}) {
		t.Fatalf("a certificate revoked on this gateway closed %v here; want c3 of bob", got)
	}

	// The sweep: the whole deny list (a1 only: b2 is not revoked in the
	// store).
	before = len(k.calls())
	f.reconcile(ctx, false)
	var certs []string
	for _, c := range k.calls()[before:] {
		if len(c) > 5 && c[:5] == "cert " {
			certs = append(certs, c)
		}
	}
	if !slices.Equal(certs, []string{want}) {
		t.Fatalf("the sweep closed %v; want %q", certs, want)
	}
}
