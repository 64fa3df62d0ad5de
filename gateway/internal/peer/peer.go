// Package peer decides who is at the other end of a TLS connection to the
// gateway (the HTTPS API or a QUIC connection): it verifies the presented
// client certificate against the cluster CA at the gateway's clock, reads
// the identity from its URI SAN, and checks the store (the certificate is
// one the gateway issued and has not revoked; the user or agent exists and
// is not locked).
//
// Errors are *Error values whose message is written for the person or
// agent refused.
package peer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// Peer is a verified caller.
type Peer struct {
	ID       identity.ID
	Serial   string
	NotAfter time.Time
	// User is set for user peers.
	User *store.User
}

// String names the peer for logs and audit: "alice" or "agent:db-1".
func (p Peer) String() string {
	if p.ID.Kind == identity.User {
		return p.ID.Name
	}
	return string(p.ID.Kind) + ":" + p.ID.Name
}

// Error is a refusal; Message is for the one refused.
type Error struct {
	Message string
	// Internal is set when the refusal comes from a failure of the gateway
	// itself (the store), not from the certificate.
	Internal error
	// Locked: the user or agent is locked by an administrator (Message
	// says so).
	Locked bool
	// CertValid: the certificate itself passed every check (chain,
	// cluster, identity, on record, not revoked); with Locked, the lock is
	// the one reason for the refusal, and the identity is the caller's.
	CertValid bool
}

func (e *Error) Error() string { return e.Message }

func (e *Error) Unwrap() error { return e.Internal }

func refuse(format string, a ...any) error { return &Error{Message: fmt.Sprintf(format, a...)} }

// chains remembers the client chains this process accepted: an agent that
// reconnects, and a user at every API request, presents the same chain
// each time, and checking its signatures was 4 % of the gateway's CPU while
// its agents reconnected after a restart. A chain's signatures are checked
// once per set of trusted CAs (Authority.X509Roots: a new pool at each CA
// change) and only while every certificate of the chain is valid; what the
// store says (on record, revoked, locked) is asked every time.
var chains = trust.NewChainCache(maxChains)

// maxChains bounds chains: about 200 bytes each (13 MiB when full), room
// for every agent of a large cluster with its renewed certificate beside
// the one it replaced, and its users. Past it, the cache forgets an eighth
// of its chains at once (trust.ChainCache) and they are checked again.
const maxChains = 1 << 16

// Verify checks chain (leaf first) at now and returns the peer. kinds
// lists the principal kinds accepted.
func Verify(ctx context.Context, st store.Store, ca *certs.Authority, chain []*x509.Certificate, now time.Time, kinds ...identity.Kind) (Peer, error) {
	id, err := chains.Verify(chain, ca.X509Roots(), ca.Cluster(), now)
	switch {
	case errors.Is(err, trust.ErrNoCertificate):
		return Peer{}, refuse("you are not logged in: run tunnel login")
	case errors.Is(err, trust.ErrExpired):
		return Peer{}, refuse("your certificate expired %s ago: run tunnel login", now.Sub(chain[0].NotAfter).Round(time.Second))
	case errors.Is(err, trust.ErrNotYetValid):
		return Peer{}, refuse("your certificate is not valid yet: check this machine's clock")
	case errors.Is(err, trust.ErrNotIssued):
		return Peer{}, refuse("your certificate was not issued by this cluster")
	case errors.Is(err, trust.ErrNoIdentity):
		return Peer{}, refuse("your certificate carries no tunnel identity")
	case err != nil:
		return Peer{}, refuse("your certificate is not an identity of this cluster")
	}
	leaf := chain[0]
	kindOK := false
	for _, k := range kinds {
		kindOK = kindOK || k == id.Kind
	}
	if !kindOK {
		return Peer{}, refuse("a %s certificate cannot be used here", id.Kind)
	}
	p := Peer{ID: id, Serial: certs.X509SerialHex(leaf), NotAfter: leaf.NotAfter}
	rec, err := st.GetCertificate(ctx, store.CertX509, p.Serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if id.Kind == identity.User {
			return Peer{}, refuse("this gateway has no record of your certificate: run tunnel login")
		}
		return Peer{}, refuse("this gateway has no record of your certificate: enrol again with a new join token")
	case err != nil:
		return Peer{}, &Error{Message: store.Sentence(err, "the gateway cannot check your certificate right now"), Internal: err}
	case rec.Subject != id.Name, rec.SubjectKind != "" && rec.SubjectKind != id.Kind:
		return Peer{}, refuse("your certificate does not match its record")
	}
	// A revoked certificate is refused whatever the account's state, but
	// the sentence names the cause the person can act on: a removed or
	// locked account says so (logging in again would not help). CertValid
	// tells whether the lock is the one reason to refuse.
	revoked := !rec.RevokedAt.IsZero()
	switch id.Kind {
	case identity.User:
		u, err := st.GetUser(ctx, id.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return Peer{}, refuse("user %s no longer exists", id.Name)
		case err != nil:
			return Peer{}, &Error{Message: store.Sentence(err, "the gateway cannot check your account right now"), Internal: err}
		case u.Locked:
			return Peer{}, &Error{Message: "your account is locked: ask an administrator", Locked: true, CertValid: !revoked}
		}
		p.User = &u
	case identity.Agent:
		a, err := st.GetAgent(ctx, id.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return Peer{}, refuse("agent %s is not enrolled here", id.Name)
		case err != nil:
			return Peer{}, &Error{Message: store.Sentence(err, "the gateway cannot check the agent right now"), Internal: err}
		case a.Locked:
			return Peer{}, &Error{Message: fmt.Sprintf("agent %s is locked by an administrator: tunnel admin agents unlock %s", id.Name, id.Name), Locked: true, CertValid: !revoked}
		}
	}
	if revoked {
		return Peer{}, refuse("your certificate was revoked by an administrator")
	}
	return p, nil
}
