package metrics

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Store is a store.Store that times every call (by operation) and counts
// what the audit events and certificates of its successful calls say:
// logins by outcome, certificates issued, sessions, revocations, QUIC
// peers refused. It embeds the store it wraps, so a method added to
// store.Store later is served (untimed) without a change here; storecalls.go
// has one wrapper per method.
//
// Store is a prometheus.Collector: register it on the registry that serves
// the metrics (NewGateway does). Its instruments exist from Wrap on, so
// the calls made before the registry exists are counted too.
type Store struct {
	store.Store

	duration     *prometheus.HistogramVec // operation
	errs         *prometheus.CounterVec   // operation, kind
	auditEvents  *prometheus.CounterVec   // type, outcome
	logins       *prometheus.CounterVec   // outcome
	certs        *prometheus.CounterVec   // kind, subject
	sessions     *prometheus.CounterVec   // outcome
	revocations  *prometheus.CounterVec   // kind
	revokedCerts prometheus.Counter
	peerRefusals prometheus.Counter
}

// storeBuckets are the store latency buckets, in seconds: a SQLite read
// takes tens of microseconds, a PostgreSQL round trip a millisecond or
// more, a group commit with fsync some milliseconds.
var storeBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Wrap returns st timed and counted; names start with prefix
// ("tunnel_gateway_"). Unwrap gives st back.
func Wrap(st store.Store, prefix string) *Store {
	if w, ok := st.(*Store); ok {
		return w
	}
	return &Store{
		Store: st,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    prefix + "store_operation_duration_seconds",
			Help:    "Time taken by the gateway's calls to its store, by operation (method of the store), whatever their outcome.",
			Buckets: storeBuckets,
		}, []string{"operation"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "store_errors_total",
			Help: "Store calls that returned an error, by operation and kind: unavailable (the store cannot be reached), not_found and exists (usually the caller's mistake), canceled (the caller gave up), other.",
		}, []string{"operation", "kind"}),
		auditEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "audit_events_total",
			Help: "Audit events durably written, by type and outcome (a folded event counts once).",
		}, []string{"type", "outcome"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "logins_total",
			Help: "User logins by outcome (success, failure), as recorded in the audit log; folded repeats of a failure count each.",
		}, []string{"outcome"}),
		certs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "certificates_issued_total",
			Help: "Certificates the cluster CA issued and recorded, by kind (x509, ssh-user, ssh-host) and subject (user, agent).",
		}, []string{"kind", "subject"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "sessions_total",
			Help: "Bastion sessions asked for, by outcome: success (created) or failure (refused by policy).",
		}, []string{"outcome"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "revocations_total",
			Help: "Revocations applied, by kind: certificate (certificates revoked by serial, user or agent), session (a session revoked), user_locked, agent_locked.",
		}, []string{"kind"}),
		revokedCerts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "certificates_revoked_total",
			Help: "Certificates marked revoked in the store.",
		}),
		peerRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "quic_peers_refused_total",
			Help: "QUIC connections refused after the TLS handshake because the peer's certificate was not acceptable (unknown, expired, revoked, locked), as recorded in the audit log.",
		}),
	}
}

// Unwrap returns the store Wrap was given, for code that needs its
// concrete type (a backup of the SQLite file, say).
func (s *Store) Unwrap() store.Store { return s.Store }

// Unwrap returns the store under st if st is a *Store, else st.
func Unwrap(st store.Store) store.Store {
	if w, ok := st.(*Store); ok {
		return w.Store
	}
	return st
}

// PeerRefusals is the count behind quic_peers_refused_total.
func (s *Store) PeerRefusals() float64 { return counterValue(s.peerRefusals) }

func (s *Store) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.duration, s.errs, s.auditEvents, s.logins, s.certs, s.sessions, s.revocations, s.revokedCerts, s.peerRefusals}
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.collectors() {
		c.Collect(ch)
	}
}

// observe records one call of op that began at start.
func (s *Store) observe(op string, start time.Time, err error) {
	s.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		s.errs.WithLabelValues(op, errorKind(err)).Inc()
	}
}

// errorKind sorts a store error into a few kinds.
func errorKind(err error) string {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, store.ErrExists):
		return "exists"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "other"
}

// events counts the events of a call that succeeded.
func (s *Store) events(err error, evs ...audit.Event) {
	if err != nil {
		return
	}
	for _, ev := range evs {
		s.event(ev)
	}
}

// event counts one durable event; a folded one stands for Details[count]
// occurrences.
func (s *Store) event(ev audit.Event) {
	n := 1.0
	if c, err := strconv.ParseInt(ev.Details[auditlog.DetailCount], 10, 64); err == nil && c > 0 {
		n = float64(c)
	}
	outcome := string(ev.Outcome)
	if ev.Outcome != audit.Success && ev.Outcome != audit.Failure {
		outcome = "other"
	}
	s.auditEvents.WithLabelValues(string(ev.Type), outcome).Inc()
	switch ev.Type {
	case audit.LoginSuccess:
		s.logins.WithLabelValues("success").Add(n)
	case audit.LoginFailure:
		s.logins.WithLabelValues("failure").Add(n)
	case audit.SessionCreated:
		s.sessions.WithLabelValues(outcome).Add(n)
	case audit.CertRevoked:
		s.revocations.WithLabelValues("certificate").Add(n)
	case audit.SessionRevoked:
		s.revocations.WithLabelValues("session").Add(n)
	case audit.UserLocked:
		s.revocations.WithLabelValues("user_locked").Add(n)
	case audit.AgentLocked:
		s.revocations.WithLabelValues("agent_locked").Add(n)
	case audit.AgentDenied:
		// The relay's refusals of QUIC peers carry no request; the API's
		// refused enrolments and renewals do.
		if ev.Details["request"] == "" {
			s.peerRefusals.Add(n)
		}
	}
}

// issued counts the certificates of a call that succeeded.
func (s *Store) issued(err error, certs []store.IssuedCert) {
	if err != nil {
		return
	}
	for _, c := range certs {
		kind := string(c.Kind)
		switch c.Kind {
		case store.CertX509, store.CertSSHUser, store.CertSSHHost:
		default:
			kind = "other"
		}
		subject := string(c.SubjectKind)
		switch c.SubjectKind {
		case identity.User, identity.Agent, identity.Gateway:
		default:
			subject = "other"
		}
		s.certs.WithLabelValues(kind, subject).Inc()
	}
}

// revokedCertificates counts the certificates a revocation marked.
func (s *Store) revokedCertificates(err error, certs []store.IssuedCert) {
	if err == nil {
		s.revokedCerts.Add(float64(len(certs)))
	}
}
