package apiserver_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestEnrollAgainRevokesTheEarlierIdentity: a second enrolment of an agent
// name (another VM, a wiped or copied data dir) revokes the first
// identity's certificates, so two identities never share the name; the
// first can no longer renew, the second can.
func TestEnrollAgainRevokesTheEarlierIdentity(t *testing.T) {
	s := newServer(t)
	admin := s.admin()
	anon := s.client(nil)
	k1, k2 := newAgentKey(t), newAgentKey(t)
	first := s.enrollOK(anon, k1.enroll(s.createToken(admin, "web-4", 0).Token))
	seq := s.lastSeq()
	second := s.enrollOK(anon, k2.enroll(s.createToken(admin, "web-4", 0).Token))

	ctx := context.Background()
	for _, c := range []struct {
		id      api.AgentIdentity
		revoked bool
	}{{first, true}, {second, false}} {
		serial := certs.X509SerialHex(parseCert(t, c.id.X509Certificate))
		rec, err := s.store.GetCertificate(ctx, store.CertX509, serial)
		if err != nil {
			t.Fatal(err)
		}
		if got := !rec.RevokedAt.IsZero(); got != c.revoked {
			t.Errorf("certificate %s revoked = %v; want %v", serial, got, c.revoked)
		}
	}
	revokedEvents := 0
	for _, ev := range s.eventsAfter(seq) {
		if ev.Type == audit.CertRevoked && ev.Subject == "web-4" && ev.Reason == "replaced by a new enrolment" {
			revokedEvents++
		}
	}
	if revokedEvents != 1 {
		t.Errorf("%d cert.revoked events for the earlier identity; want 1", revokedEvents)
	}

	old := newAgentKey(t)
	r := s.do(s.client(k1.tlsCert(t, first)), "POST", api.PathRenew, api.RenewRequest{CSR: old.csr, SSHHostKey: old.hostKey})
	if r.status == http.StatusOK {
		t.Errorf("the replaced identity renewed its certificate; want a refusal")
	}
	next := newAgentKey(t)
	if r := s.do(s.client(k2.tlsCert(t, second)), "POST", api.PathRenew, api.RenewRequest{CSR: next.csr, SSHHostKey: next.hostKey}); r.status != http.StatusOK {
		t.Errorf("the new identity's renewal: got %d (%s); want 200", r.status, r.body)
	}
}
