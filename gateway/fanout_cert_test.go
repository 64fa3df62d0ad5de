package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// certKiller is a fakeKiller that can also end connections by certificate;
// passes counts its EndCerts calls.
type certKiller struct {
	fakeKiller
	passes atomic.Int32
}

func (k *certKiller) EndCerts(revoked []store.IssuedCert) int {
	k.passes.Add(1)
	for _, c := range revoked {
		k.add("cert " + string(c.Kind) + " " + c.Serial + " of " + c.Subject)
	}
	return len(revoked)
}

// TestFanoutBatchesRevokedCertificates: certificate changes delivered
// together (a user with many certificates locked) are closed in one pass
// over the connections; a malformed one among them is skipped; a change
// of another kind read while gathering them is still applied, after them.
func TestFanoutBatchesRevokedCertificates(t *testing.T) {
	ctx := t.Context()
	st := fanoutFixture(t, time.Now().Add(time.Hour))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	k := &certKiller{}
	var reevals int
	f := newTestFanout(st, &k.fakeKiller, &reevals)
	f.killers = append(f.killers, k)
	ch := make(chan store.Change, 8)
	var want []string
	for i := range 5 {
		serial := fmt.Sprintf("%02x", i)
		ch <- store.Change{Kind: store.ChangeCert, ID: store.CertChangeID(store.CertX509, serial), Subject: "alice", Origin: "gw-a"}
		want = append(want, "cert x509 "+serial+" of alice")
	}
	ch <- store.Change{Kind: store.ChangeCert, ID: "not-a-cert", Subject: "alice", Origin: "gw-a"}
	must(st.SetAgentLocked(ctx, "web1", true, testEvent(audit.AgentLocked, "web1")))
	ch <- store.Change{Kind: store.ChangeAgent, ID: "web1", Origin: "gw-a"}
	close(ch)
	f.run(ctx, ch) // returns when ch is closed and drained
	want = append(want, "agent web1: access revoked by an administrator")
	if got := k.calls(); !slices.Equal(got, want) {
		t.Fatalf("closed %q\nwant %q", got, want)
	}
	if n := k.passes.Load(); n != 1 {
		t.Fatalf("%d passes over the connections for 5 certificates delivered together; want 1", n)
	}
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
