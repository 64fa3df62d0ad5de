package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/gateway/internal/dbcreds"
	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Database credentials the caller never sees (gateway/internal/dbcreds):
// for a stream to a service whose agent named a Vault path, the relay
// decides first, then leases (or shares) a credential for the stream's
// caller and names the lease in the stream's audit event, then hands the
// credential to the target agent with the stream: in the deliver header
// of a relayed stream, in the expect message of a direct one. A stream
// cut by a revocation or an access change revokes its lease at once.

// DBCreds leases database credentials; *dbcreds.Manager is one.
type DBCreds interface {
	Acquire(ctx context.Context, key dbcreds.Key) (dbcreds.Credential, func(revoke bool), error)
}

// streamCred is the database credential of one stream (nil when its
// service needs none).
type streamCred struct {
	cred    dbcreds.Credential
	release func(revoke bool)
	revoke  atomic.Bool
}

// done ends the stream's use of its lease.
func (c *streamCred) done() {
	if c != nil {
		c.release(c.revoke.Load())
	}
}

// cut marks the stream cut by the gateway: its lease is revoked when it
// ends.
func (c *streamCred) cut() {
	if c != nil {
		c.revoke.Store(true)
	}
}

// header puts the credential in a deliver header.
func (c *streamCred) header(h *wire.Header) {
	if c != nil {
		h.DBUser, h.DBPassword = c.cred.User, c.cred.Password
	}
}

// expect puts the credential in an expect message.
func (c *streamCred) expect(m *wire.Control) {
	if c != nil {
		m.DBUser, m.DBPassword = c.cred.User, c.cred.Password
	}
}

// credError is a stream allowed by policy for which no credential could
// be had: the caller is told why, as unavailable.
type credError struct{ msg string }

func (e *credError) Error() string { return e.msg }

// credentialPath returns the Vault path the target agent named for
// service ("" if none, or the node is offline).
func (s *Server) credentialPath(node, service string) string {
	ac := s.lookup(node)
	if ac == nil {
		return ""
	}
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	for _, sv := range ac.services {
		if sv.Name == service {
			return sv.Credentials
		}
	}
	return ""
}

// decideStream decides a stream to a node's service (not SSH) and writes
// its audit event; for a service that logs in to its database, an allowed
// stream first gets its credential, whose lease the event names.
func (s *Server) decideStream(ctx context.Context, p peer.Peer, node, service string, ev audit.Event) (access.StreamDecision, *streamCred, error) {
	path := s.credentialPath(node, service)
	if path == "" {
		d, err := s.access().Stream(ctx, access.StreamRequest{Caller: p.ID, Node: node, Service: service, Event: ev})
		return d, nil, err
	}
	dec, err := s.access().DecideStreamFrom(ctx, p.ID, node, service, access.ParseAddr(ev.SourceIP))
	if err != nil {
		return access.StreamDecision{}, nil, err
	}
	var sc *streamCred
	if dec.Allowed {
		if s.DBCreds == nil {
			return access.StreamDecision{}, nil, &credError{fmt.Sprintf(
				"service %s on %s logs in to its database with a credential from Vault (%s), and this gateway has no Vault: start it with --vault-addr", service, node, path)}
		}
		cred, release, err := s.DBCreds.Acquire(ctx, dbcreds.Key{Caller: p.ID, Node: node, Service: service, Path: path})
		if err != nil {
			msg := err.Error()
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				msg = "the gateway could not get a database credential from Vault in time"
			}
			return access.StreamDecision{}, nil, &credError{msg}
		}
		sc = &streamCred{cred: cred, release: release}
		details := maps.Clone(ev.Details)
		if details == nil {
			details = map[string]string{}
		}
		details["lease"] = cred.LeaseID
		details["db_user"] = cred.User
		ev.Details = details
	}
	d, err := s.access().Record(ctx, dec, ev)
	if err != nil || !d.Allowed {
		sc.done()
		sc = nil
	}
	return d, sc, err
}
