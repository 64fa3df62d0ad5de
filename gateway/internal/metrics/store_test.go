package metrics

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
	"github.com/tunnelhq/tunnel/pkg/store/storetest"
)

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestConformance: the wrapped store is still a store, the whole
// conformance suite over it (so it hides nothing and changes nothing).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return Wrap(openSQLite(t), Prefix)
	})
}

func TestWrapTwiceAndUnwrap(t *testing.T) {
	st := openSQLite(t)
	w := Wrap(st, Prefix)
	if Wrap(w, Prefix) != w {
		t.Error("Wrap of a wrapped store wrapped it again; want the same")
	}
	if Unwrap(w) != st || w.Unwrap() != st || Unwrap(st) != st {
		t.Error("Unwrap does not give the concrete store back")
	}
}

func ev(typ audit.Type, outcome audit.Outcome, subject string) audit.Event {
	return audit.Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Type: typ, Actor: "alice", Subject: subject, Outcome: outcome}
}

// TestCounts: the events and certificates of successful calls are
// counted, those of failed calls are not; every call is timed, and
// errors are sorted by kind.
func TestCounts(t *testing.T) {
	ctx := t.Context()
	s := Wrap(openSQLite(t), Prefix)
	if err := s.Initialize(ctx, map[string]string{"cluster": "prod"}, nil, ev(audit.ClusterInit, audit.Success, "prod")); err != nil {
		t.Fatal(err)
	}
	// Logins: two successes, one failure, and a folded failure standing
	// for 5 more.
	folded := ev(audit.LoginFailure, audit.Failure, "alice")
	folded.Details = map[string]string{auditlog.DetailCount: "5"}
	if _, err := s.AppendAudits(ctx, []audit.Event{ev(audit.LoginSuccess, audit.Success, "alice"), ev(audit.LoginSuccess, audit.Success, "bob"),
		ev(audit.LoginFailure, audit.Failure, "carol"), folded}); err != nil {
		t.Fatal(err)
	}
	// A QUIC peer refused (no request detail), and an enrolment refused.
	enrol := ev(audit.AgentDenied, audit.Failure, "web-1")
	enrol.Details = map[string]string{"request": "POST /v1/enroll"}
	if _, err := s.AppendAudits(ctx, []audit.Event{ev(audit.AgentDenied, audit.Failure, ""), enrol}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	certs := []store.IssuedCert{
		{Serial: "01", Kind: store.CertX509, Subject: "alice", SubjectKind: identity.User, NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now},
		{Serial: "02", Kind: store.CertSSHUser, Subject: "alice", SubjectKind: identity.User, NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now},
		{Serial: "03", Kind: store.CertX509, Subject: "web-1", SubjectKind: identity.Agent, NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now},
	}
	if err := s.RecordCertificates(ctx, certs, []audit.Event{ev(audit.CertIssued, audit.Success, "01")}); err != nil {
		t.Fatal(err)
	}
	// The same serials again fail: nothing more is counted.
	if err := s.RecordCertificates(ctx, certs, []audit.Event{ev(audit.CertIssued, audit.Success, "01")}); err == nil {
		t.Fatal("recording the same serials twice succeeded; the test needs a failing call")
	}
	revoked, err := s.RevokeCertificates(ctx, store.RevokeFilter{Subject: "alice", SubjectKind: identity.User}, now, ev(audit.CertRevoked, audit.Success, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 2 {
		t.Fatalf("revoked %d certificates; want alice's 2", len(revoked))
	}
	if _, err := s.GetUser(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(nobody): %v; want not found", err)
	}

	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"logins success", s.logins.WithLabelValues("success"), 2},
		{"logins failure", s.logins.WithLabelValues("failure"), 6},
		{"certs x509 user", s.certs.WithLabelValues("x509", "user"), 1},
		{"certs ssh-user user", s.certs.WithLabelValues("ssh-user", "user"), 1},
		{"certs x509 agent", s.certs.WithLabelValues("x509", "agent"), 1},
		{"revocations certificate", s.revocations.WithLabelValues("certificate"), 1},
		{"certificates revoked", s.revokedCerts, 2},
		{"QUIC peers refused", s.peerRefusals, 1},
		{"cert.issued events (one success only)", s.auditEvents.WithLabelValues("cert.issued", "success"), 1},
		{"record_certificates errors", s.errs.WithLabelValues("record_certificates", "exists"), 1},
		{"get_user not found", s.errs.WithLabelValues("get_user", "not_found"), 1},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s = %v; want %v", c.name, got, c.want)
		}
	}
	// initialize, append_audits, record_certificates, revoke_certificates,
	// get_user.
	if n := testutil.CollectAndCount(s.duration); n != 5 {
		t.Errorf("store_operation_duration_seconds has %d operations; want the 5 called", n)
	}
	got := histogramCount(t, s.duration, "record_certificates")
	if got != 2 {
		t.Errorf("record_certificates timed %d times; want 2 (the success and the failure)", got)
	}
}

// histogramCount is the number of observations of op.
func histogramCount(t *testing.T, h *prometheus.HistogramVec, op string) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "operation" && l.GetValue() == op {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
