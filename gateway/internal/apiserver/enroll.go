package apiserver

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/gateway/internal/peer"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// agentTTL is the lifetime of agent certificates.
func (s *Server) agentTTL() (time.Duration, error) {
	switch {
	case s.AgentTTL == 0:
		return certs.DefaultMachineTTL, nil
	case s.AgentTTL < time.Minute || s.AgentTTL > certs.MaxMachineTTL:
		return 0, fmt.Errorf("agent certificate TTL %s is not between a minute and %s: fix the gateway's configuration", s.AgentTTL, certs.MaxMachineTTL)
	}
	return s.AgentTTL, nil
}

// agentKeys are the parsed keys of an enrolment or renewal.
type agentKeys struct {
	csr     *x509.CertificateRequest
	hostKey ssh.PublicKey
}

func parseAgentKeys(csr, hostKey string) (agentKeys, error) {
	c, err := certs.ParseCSR([]byte(csr))
	if err != nil {
		return agentKeys{}, fmt.Errorf("certificate request: %w", err)
	}
	k, err := certs.ParseSSHPublicKey([]byte(hostKey))
	if err != nil {
		return agentKeys{}, fmt.Errorf("SSH host key: %w", err)
	}
	return agentKeys{csr: c, hostKey: k}, nil
}

// agentDenied records a refused enrolment or renewal. Its reason never
// holds the token. Through s.Denials, the first refusal of a kind from a
// source is written before the answer, and its repeats are folded into one
// event per interval.
func (s *Server) agentDenied(ctx context.Context, r *http.Request, actor, subject, reason string) error {
	ev := audit.Event{Time: s.now(), Type: audit.AgentDenied, Actor: actor, Subject: subject,
		Outcome: audit.Failure, Reason: reason, SourceIP: remoteAddr(r).String(),
		Details: map[string]string{"request": r.Method + " " + r.URL.Path}}
	if err := s.recordDenial(ctx, ev); err != nil {
		return fmt.Errorf("record agent refusal: %w", err)
	}
	return nil
}

// handleEnroll admits an agent with a join token: the token is checked and
// used in one transaction, then the agent's certificates are issued.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// refuse audits a refusal, then answers it.
	refuse := func(subject string, he *httpError) {
		if err := s.agentDenied(ctx, r, "anonymous", subject, he.msg); err != nil {
			s.fail(w, r, err)
			return
		}
		s.fail(w, r, he)
	}
	var req api.EnrollRequest
	if err := api.Decode(r.Body, &req); err != nil {
		refuse("", &httpError{400, api.CodeBadRequest, err.Error()})
		return
	}
	ttl, err := s.agentTTL()
	if err != nil {
		s.fail(w, r, err) // before the token is used
		return
	}
	// The keys carry no secret and are checked before the token, so that
	// a malformed request does not use the token up.
	keys, err := parseAgentKeys(req.CSR, req.SSHHostKey)
	if err != nil {
		refuse("", &httpError{400, api.CodeBadRequest, err.Error()})
		return
	}
	token := strings.TrimSpace(req.Token)
	if token == "" {
		refuse("", &httpError{400, api.CodeBadRequest, "no join token: create one with tunnel admin tokens create --agent NAME"})
		return
	}
	hash := hashToken(token)
	now := s.now()
	ev := audit.Event{Time: now, Type: audit.AgentEnrolled, Actor: "anonymous", Subject: "token:" + tokenID(hash),
		Outcome: audit.Success, SourceIP: remoteAddr(r).String(),
		Details: map[string]string{"token_id": tokenID(hash)}}
	t, err := s.Store.ConsumeJoinToken(ctx, hash, now, ev)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed), errors.Is(err, store.ErrTokenExpired):
		refuse("token:"+tokenID(hash), &httpError{401, api.CodeUnauthenticated, err.Error()})
		return
	case errors.Is(err, store.ErrLocked):
		refuse("token:"+tokenID(hash), &httpError{403, api.CodeForbidden, err.Error()})
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}

	// The token is used: from here on a failure costs the agent its token.
	//
	// A new enrolment replaces the agent's identity: the certificates of an
	// earlier enrolment of this name (another VM, a copied or wiped data
	// dir) are revoked and its live connections cut, so that two
	// identities never share the name (they would replace each other's
	// connection and split its streams).
	if err := s.replaceAgentIdentity(ctx, r, t.Agent, now); err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := s.issueAgent(ctx, r, t.Agent, keys, ttl, now, nil)
	if err != nil {
		s.log().Error("issue agent certificates after enrolment", "agent", t.Agent, "token_id", tokenID(hash), "err", err)
		reason := "certificates not issued after the join token was used"
		if aerr := s.agentDenied(ctx, r, t.Agent, t.Agent, reason); aerr != nil {
			s.log().Error("record agent refusal", "agent", t.Agent, "err", aerr)
		}
		msg := "the gateway used the join token but could not issue the agent's certificates (see the gateway log): create a new token with tunnel admin tokens create --agent " + t.Agent
		var he *httpError
		if errors.As(err, &he) {
			msg = he.msg + "; the join token is used up: create a new one with tunnel admin tokens create --agent " + t.Agent
			s.fail(w, r, &httpError{he.status, he.code, msg})
			return
		}
		s.fail(w, r, &httpError{500, api.CodeInternal, msg})
		return
	}
	s.log().Info("agent enrolled", "agent", t.Agent, "token_id", tokenID(hash), "remote", remoteAddr(r).String())
	writeJSON(w, 200, resp)
}

// replaceAgentIdentity revokes the certificates of earlier enrolments of
// the agent name and cuts its live connections and sessions.
func (s *Server) replaceAgentIdentity(ctx context.Context, r *http.Request, name string, now time.Time) error {
	ev := audit.Event{Time: now, Type: audit.CertRevoked, Actor: name, Subject: name, Outcome: audit.Success,
		Reason: "replaced by a new enrolment", SourceIP: remoteAddr(r).String()}
	revoked, err := s.Store.RevokeCertificates(ctx, store.RevokeFilter{Subject: name, SubjectKind: identity.Agent}, now, ev)
	if err != nil {
		return fmt.Errorf("revoke the earlier identity of agent %s: %w", name, err)
	}
	if len(revoked) > 0 {
		s.log().Warn("agent enrolled again: its earlier identity is revoked", "agent", name, "certificates", len(revoked))
		if s.Sessions != nil {
			if err := s.Sessions.RevokeAgent(ctx, name, name); err != nil {
				s.log().Error("cut the earlier identity's connections", "agent", name, "err", err)
			}
		}
	}
	return nil
}

// handleRenew issues new certificates to an agent that presents its
// current, valid one.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now()
	var chain []*x509.Certificate
	if r.TLS != nil {
		chain = r.TLS.PeerCertificates
	}
	if len(chain) == 0 {
		msg := "renewal needs the agent's current certificate; an agent without one enrols with a join token"
		if err := s.agentDenied(ctx, r, "anonymous", "", msg); err != nil {
			s.fail(w, r, err)
			return
		}
		s.fail(w, r, unauthenticated(msg))
		return
	}
	p, err := peer.Verify(ctx, s.Store, s.CA, chain, now, identity.Agent)
	if err != nil {
		var pe *peer.Error
		if !errors.As(err, &pe) || pe.Internal != nil {
			s.fail(w, r, err)
			return
		}
		if aerr := s.agentDenied(ctx, r, "anonymous", certs.X509SerialHex(chain[0]), pe.Message); aerr != nil {
			s.fail(w, r, aerr)
			return
		}
		s.fail(w, r, unauthenticated(pe.Message))
		return
	}
	name := p.ID.Name
	var req api.RenewRequest
	if err := api.Decode(r.Body, &req); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	keys, err := parseAgentKeys(req.CSR, req.SSHHostKey)
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	ttl, err := s.agentTTL()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	renewed := audit.Event{Time: now, Type: audit.AgentRenewed, Actor: name, Subject: name,
		Outcome: audit.Success, SourceIP: remoteAddr(r).String(),
		Details: map[string]string{"previous_serial": p.Serial}}
	resp, err := s.issueAgent(ctx, r, name, keys, ttl, now, &renewed)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, 200, resp)
}

// issueAgent signs the agent's X.509 client certificate and SSH host
// certificate, records both with their events (and extra, if set) in one
// transaction, and returns the identity to hand back.
func (s *Server) issueAgent(ctx context.Context, r *http.Request, name string, keys agentKeys, ttl time.Duration, now time.Time, extra *audit.Event) (*api.AgentIdentity, error) {
	id := identity.ID{Cluster: s.CA.Cluster(), Kind: identity.Agent, Name: name}
	xc, err := s.CA.IssueX509Client(certs.X509Request{ID: id, PublicKey: keys.csr.PublicKey, TTL: ttl})
	if err != nil {
		return nil, issueError(err)
	}
	hc, err := s.CA.IssueSSHHost(certs.SSHHostRequest{Host: name,
		Principals: []string{name, name + "." + s.CA.Cluster()}, PublicKey: keys.hostKey, TTL: ttl})
	if err != nil {
		return nil, issueError(err)
	}
	records := []store.IssuedCert{{
		Serial: certs.X509SerialHex(xc), Kind: store.CertX509, Subject: name, SubjectKind: identity.Agent,
		NotBefore: xc.NotBefore, NotAfter: xc.NotAfter, IssuedAt: now, Principals: []string{id.String()},
	}, {
		Serial: certs.SSHSerialHex(hc), Kind: store.CertSSHHost, Subject: name, SubjectKind: identity.Agent,
		NotBefore: time.Unix(int64(hc.ValidAfter), 0), NotAfter: time.Unix(int64(hc.ValidBefore), 0),
		IssuedAt: now, Principals: hc.ValidPrincipals,
	}}
	var events []audit.Event
	for _, c := range records {
		events = append(events, audit.Event{Time: now, Type: audit.CertIssued, Actor: name, Subject: c.Serial,
			Outcome: audit.Success, SourceIP: remoteAddr(r).String(),
			Details: map[string]string{
				"kind": string(c.Kind), "principals": strings.Join(c.Principals, ","),
				"not_after": c.NotAfter.UTC().Format(time.RFC3339), "signer": s.CA.Signer(c.Kind),
			}})
	}
	if extra != nil {
		events = append(events, *extra)
	}
	if err := s.Store.RecordCertificates(ctx, records, events); err != nil {
		return nil, fmt.Errorf("record agent certificates: %w", err)
	}
	return &api.AgentIdentity{
		Agent:              name,
		X509Certificate:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: xc.Raw})),
		SSHHostCertificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hc))),
		NotAfter:           xc.NotAfter,
		CA:                 login.CABundle(s.CA),
	}, nil
}

// issueError turns a CA refusal into an answer; anything else stays
// internal.
func issueError(err error) error {
	switch {
	case errors.Is(err, certs.ErrTTLTooLong), errors.Is(err, certs.ErrUnsupportedKey),
		errors.Is(err, certs.ErrInvalidRequest), errors.Is(err, certs.ErrNoPrincipals):
		return badRequest(err.Error())
	}
	return fmt.Errorf("issue agent certificate: %w", err)
}
